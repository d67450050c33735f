package mailbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/i18n"
	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/outgoing"
	"gorm.io/gorm"
)

// SMTPInput is hand-entered SMTP settings of the outgoing block. A nil
// Password keeps the stored one.
type SMTPInput struct {
	Host     string
	Port     int
	Security outgoing.Security
	Auth     outgoing.AuthMethod // "" = login
	Login    string              // "" = the IMAP login
	Password *secret.Secret
}

// OutgoingInput is the outgoing block: "send via external SMTP", "save a
// copy on the mail server", and the SMTP settings.
type OutgoingInput struct {
	Enabled  bool
	SaveCopy bool
	SMTP     *SMTPInput
}

// resolved is where a mailbox's SMTP settings come from.
type resolved struct {
	source    string
	accountID *int64
	settings  outgoing.Settings
}

// resolve decides the SMTP settings for a mailbox: hand-entered ones win;
// else the provider preset with the IMAP credentials; else the active
// system account with the mailbox's address; else the owner's own-SMTP CRM
// sender for that address; else the SMTP fields are required.
func (s *Service) resolve(ctx context.Context, mb Mailbox, in *SMTPInput) (resolved, error) {
	if in != nil && in.Host != "" {
		set := outgoing.Settings{Host: strings.TrimSpace(in.Host), Port: in.Port, Security: in.Security, Auth: in.Auth, Login: in.Login}
		if set.Auth == "" {
			set.Auth = outgoing.AuthLogin
		}
		if set.Login == "" && set.Auth == outgoing.AuthLogin {
			set.Login = mb.IMAPLogin
		}
		switch {
		case in.Password != nil:
			set.Password = *in.Password
		case set.Auth == outgoing.AuthLogin && mb.SMTPPassword != "":
			pw, err := s.box.Open(mb.SMTPPassword, secret.AAD("mailboxes", "smtp_password", mb.ID))
			if err != nil {
				return resolved{}, fmt.Errorf("open SMTP password of mailbox %d: %w", mb.ID, err)
			}
			set.Password = pw
		}
		if set.Auth == outgoing.AuthNone {
			set.Login, set.Password = "", ""
		}
		if err := set.Validate("smtp."); err != nil {
			return resolved{}, err
		}
		return resolved{source: SourceManual, settings: set}, nil
	}
	if p, ok := ProviderByID(mb.Provider); ok {
		imapSet, err := s.IMAPSettingsOf(mb)
		if err != nil {
			return resolved{}, err
		}
		set := outgoing.Settings{Host: p.SMTP.Host, Port: p.SMTP.Port, Security: p.SMTP.Security,
			Auth: outgoing.AuthLogin, Login: imapSet.Login, Password: imapSet.Password}
		return resolved{source: SourcePreset, settings: set}, nil
	}
	if a, ok, err := s.out.ActiveAccountByEmail(ctx, mb.Email); err != nil {
		return resolved{}, err
	} else if ok {
		t, err := s.out.AccountTarget(ctx, a.ID)
		if err != nil {
			return resolved{}, err
		}
		id := a.ID
		return resolved{source: SourceSystem, accountID: &id, settings: t.Settings}, nil
	}
	if _, set, ok, err := s.out.OwnSMTPSender(ctx, mb.UserID, mb.Email); err != nil {
		return resolved{}, err
	} else if ok {
		return resolved{source: SourceSender, settings: set}, nil
	}
	return resolved{}, apperr.Invalid("smtp.host", "required",
		"enter the SMTP server of %s: it is not a known provider and no account or sender has this address", mb.Email)
}

// SetOutgoing saves the outgoing block. Turning it on checks the settings
// through RCPT with the mailbox's address as sender; a failed check saves
// nothing (422 with the report). On: the mirrored CRM sender is created or
// updated; off: it is removed with the same-address own-SMTP sender. Each is
// one transaction with the mailbox's change.
func (s *Service) SetOutgoing(ctx context.Context, c outgoing.Caller, id int64, in OutgoingInput) (Mailbox, *outgoing.Report, error) {
	mb, err := s.Get(ctx, c, id)
	if err != nil {
		return Mailbox{}, nil, err
	}
	now := s.now()
	if !in.Enabled {
		err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			if err := tx.Model(&Mailbox{}).Where("id = ?", mb.ID).Updates(map[string]any{
				"out_enabled": false, "out_save_copy": in.SaveCopy, "updated_at": now,
			}).Error; err != nil {
				return err
			}
			if err := s.out.RemoveMailboxSender(tx, mb.ID); err != nil {
				return err
			}
			return s.out.RemoveOwnSMTPSender(tx, mb.UserID, mb.Email)
		})
		if err != nil {
			return Mailbox{}, nil, fmt.Errorf("turn off outgoing of mailbox %d: %w", id, err)
		}
		s.forgetStatus(mb.ID)
		mb.OutEnabled, mb.OutSaveCopy = false, in.SaveCopy
		return mb, nil, nil
	}
	r, err := s.resolve(ctx, mb, in.SMTP)
	if err != nil {
		return Mailbox{}, nil, err
	}
	rep, err := s.out.CheckSMTP(ctx, c, r.settings, mb.Email, "")
	if err != nil {
		return Mailbox{}, nil, err
	}
	if !rep.OK {
		return Mailbox{}, &rep, &apperr.Error{Kind: apperr.ErrUnprocessable, Code: "check_failed",
			Message: fmt.Sprintf("the SMTP check failed at step %s; the settings were not saved", rep.Failed), Detail: rep}
	}
	upd := map[string]any{
		"out_enabled": true, "out_save_copy": in.SaveCopy, "out_source": r.source, "out_account_id": r.accountID,
		"smtp_host": "", "smtp_port": 0, "smtp_security": "", "smtp_auth": "", "smtp_login": "", "smtp_password": "",
		"updated_at": now,
	}
	if r.source == SourceManual || r.source == SourceSender {
		sealed := ""
		if !r.settings.Password.IsZero() {
			if sealed, err = s.box.SealSecret(r.settings.Password, secret.AAD("mailboxes", "smtp_password", mb.ID)); err != nil {
				return Mailbox{}, nil, err
			}
		}
		upd["smtp_host"], upd["smtp_port"], upd["smtp_security"] = r.settings.Host, r.settings.Port, string(r.settings.Security)
		upd["smtp_auth"], upd["smtp_login"], upd["smtp_password"] = string(r.settings.Auth), r.settings.Login, sealed
	}
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Model(&Mailbox{}).Where("id = ?", mb.ID).Updates(upd).Error; err != nil {
			return err
		}
		return s.out.PutMailboxSender(tx, mb.UserID, mb.ID, mb.Email, mb.Name)
	})
	if err != nil {
		return Mailbox{}, &rep, fmt.Errorf("save outgoing of mailbox %d: %w", id, err)
	}
	s.forgetStatus(mb.ID)
	mb, err = s.Get(ctx, c, id)
	return mb, &rep, err
}

// CheckOutgoing checks outgoing settings without saving them (the Check
// button): the values given, or what saving would use.
func (s *Service) CheckOutgoing(ctx context.Context, c outgoing.Caller, id int64, in *SMTPInput) (outgoing.Report, error) {
	mb, err := s.Get(ctx, c, id)
	if err != nil {
		return outgoing.Report{}, err
	}
	r, err := s.resolve(ctx, mb, in)
	if err != nil {
		return outgoing.Report{}, err
	}
	return s.out.CheckSMTP(ctx, c, r.settings, mb.Email, "")
}

// savedSettings returns the SMTP settings a mailbox with outgoing on sends
// with.
func (s *Service) savedSettings(ctx context.Context, mb Mailbox) (outgoing.Settings, error) {
	switch mb.OutSource {
	case SourcePreset:
		r, err := s.resolve(ctx, Mailbox{ID: mb.ID, Provider: mb.Provider, IMAPLogin: mb.IMAPLogin, IMAPPassword: mb.IMAPPassword, Email: mb.Email}, nil)
		return r.settings, err
	case SourceSystem:
		if mb.OutAccountID == nil {
			return outgoing.Settings{}, apperr.NotFound("SMTP account")
		}
		t, err := s.out.AccountTarget(ctx, *mb.OutAccountID)
		return t.Settings, err
	default:
		set := outgoing.Settings{Host: mb.SMTPHost, Port: mb.SMTPPort, Security: mb.SMTPSecurity, Auth: mb.SMTPAuth, Login: mb.SMTPLogin}
		if mb.SMTPPassword != "" {
			pw, err := s.box.Open(mb.SMTPPassword, secret.AAD("mailboxes", "smtp_password", mb.ID))
			if err != nil {
				return outgoing.Settings{}, fmt.Errorf("open SMTP password of mailbox %d: %w", mb.ID, err)
			}
			set.Password = pw
		}
		return set, nil
	}
}

// OutgoingStatus is the result of the check run when the settings are
// viewed: "Sending with the current settings works!" or the error.
type OutgoingStatus struct {
	OK        bool            `json:"ok"`
	CheckedAt time.Time       `json:"checked_at"`
	Step      outgoing.Step   `json:"step,omitempty"`
	Code      string          `json:"code,omitempty"`
	Message   string          `json:"message"`
	Hint      string          `json:"hint,omitempty"`
	Reply     *outgoing.Reply `json:"reply,omitempty"`
}

type statusEntry struct {
	fp     string
	done   chan struct{}
	status OutgoingStatus
	at     time.Time
}

// SettingsView is what the mailbox settings dialog shows.
type SettingsView struct {
	Mailbox Mailbox
	// SMTP is the settings the outgoing block uses (no password), when on.
	SMTP *outgoing.Settings
	// Suggestion is the owner's own-SMTP sender for this address, shown to
	// preload the block when it is off.
	Suggestion *outgoing.Settings
	// Status is a fresh (or at most OutgoingStatusTTL old) check of the
	// saved settings; nil when outgoing is off.
	Status *OutgoingStatus
}

// Settings returns the settings view, checking the saved outgoing settings
// again. Concurrent views of one mailbox share one check, and a result
// younger than the TTL is reused, so a refresh storm cannot hammer the mail
// server. It answers within the check timeout even when the server stalls.
func (s *Service) Settings(ctx context.Context, c outgoing.Caller, id int64) (SettingsView, error) {
	mb, err := s.Get(ctx, c, id)
	if err != nil {
		return SettingsView{}, err
	}
	v := SettingsView{Mailbox: mb}
	if !mb.OutEnabled {
		if _, set, ok, err := s.out.OwnSMTPSender(ctx, mb.UserID, mb.Email); err == nil && ok {
			set.Password = ""
			v.Suggestion = &set
		}
		return v, nil
	}
	set, err := s.savedSettings(ctx, mb)
	if err != nil {
		st := OutgoingStatus{CheckedAt: s.now(), Code: "settings_unavailable", Message: err.Error()}
		if ae, ok := apperr.As(err); ok {
			st.Message = ae.Message
		}
		v.Status = &st
		return v, nil
	}
	shown := set
	shown.Password = ""
	v.SMTP = &shown
	st, err := s.outgoingStatus(ctx, c, mb, set)
	if err != nil {
		return SettingsView{}, err
	}
	v.Status = &st
	return v, nil
}

func (s *Service) outgoingStatus(ctx context.Context, c outgoing.Caller, mb Mailbox, set outgoing.Settings) (OutgoingStatus, error) {
	fp := settingsFingerprint(set, mb.Email)
	s.statusMu.Lock()
	e := s.status[mb.ID]
	fresh := e != nil && e.fp == fp
	if fresh {
		select {
		case <-e.done:
			fresh = s.now().Sub(e.at) < s.cfg.OutgoingStatusTTL
		default: // in flight: share it
		}
	}
	if !fresh {
		e = &statusEntry{fp: fp, done: make(chan struct{})}
		s.status[mb.ID] = e
		go s.runStatusCheck(context.WithoutCancel(ctx), c, mb, set, e)
	}
	s.statusMu.Unlock()
	select {
	case <-e.done:
		return e.status, nil
	case <-ctx.Done():
		return OutgoingStatus{}, ctx.Err()
	}
}

func (s *Service) runStatusCheck(ctx context.Context, c outgoing.Caller, mb Mailbox, set outgoing.Settings, e *statusEntry) {
	defer close(e.done)
	rep := s.out.CheckSMTPStatus(ctx, c, set, mb.Email)
	st := OutgoingStatus{OK: rep.OK, Step: rep.Failed}
	for _, step := range rep.Steps {
		if !step.OK {
			st.Code, st.Message, st.Hint, st.Reply = step.Code, step.Explanation, step.Hint, step.Reply
		}
	}
	if rep.OK {
		st.Message = statusOKMessage(c.Lang)
	}
	st.CheckedAt = s.now()
	e.status, e.at = st, st.CheckedAt
}

func (s *Service) forgetStatus(id int64) {
	s.statusMu.Lock()
	delete(s.status, id)
	s.statusMu.Unlock()
}

func settingsFingerprint(set outgoing.Settings, from string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d\x00%s\x00%s\x00%s\x00%s\x00%s", set.Host, set.Port, set.Security, set.Auth, set.Login, set.Password.Reveal(), from)
	return hex.EncodeToString(h.Sum(nil))
}

func statusOKMessage(lang string) string {
	return i18n.T(i18n.Parse(lang), "mailbox.outgoing_ok")
}
