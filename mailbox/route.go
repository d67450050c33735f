package mailbox

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/outgoing"
)

// mailboxRouter makes mailboxes with external SMTP on a sender kind of the
// outgoing routing: a message whose From is one of the caller's such
// mailboxes leaves through that mailbox's SMTP settings.
type mailboxRouter struct{ s *Service }

func (mailboxRouter) Kind() string { return outgoing.KindMailbox }

func (r mailboxRouter) Route(ctx context.Context, c outgoing.Caller, from string) (outgoing.Route, bool, error) {
	var mb Mailbox
	err := r.s.db.WithContext(ctx).
		Where("user_id = ? AND lower(email) = lower(?) AND out_enabled = ?", c.UserID, from, true).Take(&mb).Error
	if store.IsNotFound(err) {
		return outgoing.Route{}, false, nil
	}
	if err != nil {
		return outgoing.Route{}, false, fmt.Errorf("route %s: %w", from, err)
	}
	return outgoing.Route{Kind: outgoing.KindMailbox, ID: mb.ID, SenderName: mb.Name}, true, nil
}

func (r mailboxRouter) Target(ctx context.Context, id int64) (outgoing.Target, error) {
	mb, err := r.s.ByID(ctx, id)
	if err != nil {
		return outgoing.Target{}, err
	}
	if !mb.OutEnabled {
		return outgoing.Target{}, &apperr.Error{Kind: apperr.ErrNotFound, Code: "outgoing_off",
			Message: fmt.Sprintf("external SMTP is off for the mailbox %s", mb.Email)}
	}
	var failed int64
	if err := r.s.db.WithContext(ctx).Model(&outgoing.Sender{}).Where("mailbox_id = ? AND auth_failed = ?", id, true).Count(&failed).Error; err != nil {
		return outgoing.Target{}, err
	}
	if failed > 0 {
		return outgoing.Target{Email: mb.Email}, fmt.Errorf("mailbox %s: %w", mb.Email, outgoing.ErrAuthFailed)
	}
	set, err := r.s.savedSettings(ctx, mb)
	if err != nil {
		return outgoing.Target{}, err
	}
	return outgoing.Target{Settings: set, Email: mb.Email}, nil
}

func (r mailboxRouter) AuthFailed(ctx context.Context, id int64) error {
	return r.s.db.WithContext(ctx).Model(&outgoing.Sender{}).Where("mailbox_id = ?", id).Update("auth_failed", true).Error
}

// Copy results recorded on the outbox row.
const (
	CopyAppended = "appended"
	CopyExists   = "exists"
	CopySkipped  = "skipped: the provider files sent mail itself"
)

// SaveCopy files a sent message in the mailbox's Sent folder, with \Seen,
// when "save a copy" is on — unless the provider does that itself, or Sent
// already holds a message with the same Message-ID (so a resent message is
// not filed twice). It never causes a resend: the message is sent already.
func (r mailboxRouter) SaveCopy(ctx context.Context, id int64, m outgoing.OutboxMessage) (string, error) {
	s := r.s
	mb, err := s.ByID(ctx, id)
	if err != nil {
		return "", err
	}
	if !mb.OutSaveCopy {
		return "", nil
	}
	p, _ := ProviderByID(mb.Provider)
	if p.FilesSentItself {
		return CopySkipped, nil
	}
	var rows []FolderRow
	if err := s.db.WithContext(ctx).Where("mailbox_id = ?", id).Find(&rows).Error; err != nil {
		return "", err
	}
	folders := make([]Folder, 0, len(rows))
	for _, f := range rows {
		folders = append(folders, Folder{Name: f.Name, Delimiter: f.Delimiter, SpecialUse: f.SpecialUse, NoSelect: f.NoSelect})
	}
	sent, ok := SentFolder(folders, p.SentFolder)
	if !ok {
		return "", fmt.Errorf("mailbox %s has no Sent folder", mb.Email)
	}
	set, err := s.IMAPSettingsOf(mb)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*s.cfg.CheckTimeout)
	defer cancel()
	c, err := s.imap.Dial(ctx, set)
	if err != nil {
		return "", fmt.Errorf("connect to %s: %w", mb.IMAPHost, err)
	}
	defer c.Close()
	if _, err := c.Select(sent.Name, &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		return "", fmt.Errorf("open %q: %w", sent.Name, err)
	}
	found, err := c.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{
		{Key: "Message-ID", Value: "<" + m.MessageID + ">"},
	}}, nil).Wait()
	if err != nil {
		return "", fmt.Errorf("search %q for %s: %w", sent.Name, m.MessageID, err)
	}
	if len(found.AllUIDs()) > 0 {
		return CopyExists, nil
	}
	when := time.Now()
	if m.SentAt != nil {
		when = *m.SentAt
	}
	cmd := c.Append(sent.Name, int64(len(m.Raw)), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagSeen}, Time: when})
	if _, err := io.Copy(cmd, bytes.NewReader(m.Raw)); err != nil {
		cmd.Close()
		return "", fmt.Errorf("append to %q: %w", sent.Name, err)
	}
	if err := cmd.Close(); err != nil {
		return "", fmt.Errorf("append to %q: %w", sent.Name, err)
	}
	if _, err := cmd.Wait(); err != nil {
		return "", fmt.Errorf("append to %q: %w", sent.Name, err)
	}
	_ = c.Logout().Wait()
	return CopyAppended, nil
}
