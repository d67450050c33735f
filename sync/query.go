package imapsync

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/mailbox"
)

// Limits of ListMessages.
const (
	DefaultListLimit = 50
	MaxListLimit     = 500
)

// MessageSummary is a synced message as lists show it.
type MessageSummary struct {
	ID           int64      `json:"id"`
	Folder       string     `json:"folder"`
	UID          uint32     `json:"uid"`
	MessageID    string     `json:"message_id"`
	InReplyTo    string     `json:"in_reply_to,omitempty"`
	References   []string   `json:"references,omitempty"`
	Date         *time.Time `json:"date"`          // the Date header
	InternalDate time.Time  `json:"internal_date"` // when the server received it
	From         []Address  `json:"from"`
	To           []Address  `json:"to"`
	Cc           []Address  `json:"cc"`
	Subject      string     `json:"subject"`
	Flags        []string   `json:"flags"`
	Size         int64      `json:"size"`
	Snippet      string     `json:"snippet"`
	Attachments  []string   `json:"attachments"`
	RawStored    bool       `json:"raw_stored"`
}

// MessagePage is one page of a list, newest first.
type MessagePage struct {
	Messages []MessageSummary `json:"messages"`
	// NextCursor fetches the next page; "" on the last one.
	NextCursor string `json:"next_cursor"`
}

// ListQuery selects a page: Folder "" means every folder of the mailbox;
// Cursor is a NextCursor; Limit 0 means DefaultListLimit.
type ListQuery struct {
	Folder string
	Cursor string
	Limit  int
}

// MessageDetail is a message with its parsed content.
type MessageDetail struct {
	MessageSummary
	View
}

// summaryColumns are the columns of a summary (never raw).
var summaryColumns = []string{"messages.id", "messages.folder_id", "messages.uid", "messages.message_id", "messages.in_reply_to",
	"messages.refs", "messages.sent_at", "messages.internal_date", "messages.from_addr", "messages.to_addr", "messages.cc_addr",
	"messages.subject", "messages.flags", "messages.size", "messages.snippet", "messages.attachments", "messages.raw_omitted"}

// summaryRow is a message row joined with its folder's name (flat: gorm
// scans embedded structs of a model unreliably).
type summaryRow struct {
	ID           int64
	FolderID     int64
	UID          uint32 `gorm:"column:uid"`
	MessageID    string
	InReplyTo    string
	Refs         string
	SentAt       *time.Time
	InternalDate time.Time
	FromAddr     string
	ToAddr       string
	CcAddr       string
	Subject      string
	Flags        string
	Size         int64
	Snippet      string
	Attachments  string
	RawOmitted   bool
	RawCodec     string
	Raw          []byte
	FolderName   string
}

func (r summaryRow) summary() MessageSummary {
	var refs []string
	if r.Refs != "" {
		refs = strings.Fields(r.Refs)
	}
	return MessageSummary{
		ID: r.ID, Folder: r.FolderName, UID: r.UID, MessageID: r.MessageID, InReplyTo: r.InReplyTo, References: refs,
		Date: r.SentAt, InternalDate: r.InternalDate.UTC(),
		From: parseAddressJSON(r.FromAddr), To: parseAddressJSON(r.ToAddr), Cc: parseAddressJSON(r.CcAddr),
		Subject: r.Subject, Flags: splitFlags(r.Flags), Size: r.Size, Snippet: r.Snippet,
		Attachments: parseStringsJSON(r.Attachments), RawStored: !r.RawOmitted,
	}
}

// ListMessages returns a page of a mailbox's synced messages, newest
// (by INTERNALDATE) first. It does not check who asks: the API does.
func (e *Engine) ListMessages(ctx context.Context, mailboxID int64, q ListQuery) (MessagePage, error) {
	limit := q.Limit
	switch {
	case limit == 0:
		limit = DefaultListLimit
	case limit < 0 || limit > MaxListLimit:
		return MessagePage{}, apperr.Invalid("limit", "out_of_range", "limit must be from 1 to %d", MaxListLimit)
	}
	db := e.db.WithContext(ctx).Model(&messageRow{}).
		Select(append(summaryColumns, "mailbox_folders.name AS folder_name")).
		Joins("JOIN mailbox_folders ON mailbox_folders.id = messages.folder_id")
	if q.Folder != "" {
		var f mailbox.FolderRow
		err := e.db.WithContext(ctx).Where("mailbox_id = ? AND name = ?", mailboxID, q.Folder).Take(&f).Error
		if isNotFound(err) {
			return MessagePage{}, apperr.Invalid("folder", "unknown_folder", "the mailbox has no folder %q", q.Folder)
		}
		if err != nil {
			return MessagePage{}, fmt.Errorf("read folder %q: %w", q.Folder, err)
		}
		db = db.Where("messages.folder_id = ?", f.ID)
	} else {
		db = db.Where("messages.mailbox_id = ?", mailboxID)
	}
	if q.Cursor != "" {
		at, id, err := parseCursor(q.Cursor)
		if err != nil {
			return MessagePage{}, err
		}
		db = db.Where("(messages.internal_date < ? OR (messages.internal_date = ? AND messages.id < ?))", at, at, id)
	}
	var rows []summaryRow
	if err := db.Order("messages.internal_date DESC, messages.id DESC").Limit(limit + 1).Scan(&rows).Error; err != nil {
		return MessagePage{}, fmt.Errorf("list messages of mailbox %d: %w", mailboxID, err)
	}
	page := MessagePage{Messages: make([]MessageSummary, 0, min(len(rows), limit))}
	for i, r := range rows {
		if i == limit {
			last := rows[limit-1]
			page.NextCursor = makeCursor(last.InternalDate, last.ID)
			break
		}
		page.Messages = append(page.Messages, r.summary())
	}
	return page, nil
}

func makeCursor(at time.Time, id int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(at.Unix(), 10) + "." + strconv.FormatInt(id, 10)))
}

func parseCursor(c string) (time.Time, int64, error) {
	bad := apperr.Invalid("cursor", "invalid_cursor", "the cursor is not one this API returned")
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return time.Time{}, 0, bad
	}
	secText, idText, ok := strings.Cut(string(b), ".")
	if !ok {
		return time.Time{}, 0, bad
	}
	sec, err1 := strconv.ParseInt(secText, 10, 64)
	id, err2 := strconv.ParseInt(idText, 10, 64)
	if err1 != nil || err2 != nil {
		return time.Time{}, 0, bad
	}
	return time.Unix(sec, 0).UTC(), id, nil
}

// row reads one message of a mailbox, raw included when withRaw.
func (e *Engine) row(ctx context.Context, mailboxID, id int64, withRaw bool) (summaryRow, error) {
	cols := append([]string(nil), summaryColumns...)
	if withRaw {
		cols = append(cols, "messages.raw_codec", "messages.raw")
	}
	var rows []summaryRow
	err := e.db.WithContext(ctx).Model(&messageRow{}).Select(append(cols, "mailbox_folders.name AS folder_name")).
		Joins("JOIN mailbox_folders ON mailbox_folders.id = messages.folder_id").
		Where("messages.mailbox_id = ? AND messages.id = ?", mailboxID, id).Limit(1).Scan(&rows).Error
	if err != nil {
		return summaryRow{}, fmt.Errorf("read message %d: %w", id, err)
	}
	if len(rows) == 0 {
		return summaryRow{}, apperr.NotFound("message")
	}
	return rows[0], nil
}

var errRawNotStored = &apperr.Error{Kind: apperr.ErrNotFound, Code: "raw_not_stored",
	Message: "the message is larger than the sync's size limit; only its headers were stored"}

// Message returns a message with its headers, text, HTML and attachment
// list, parsed from the stored raw message (bounded: 1 MiB of text and of
// HTML).
func (e *Engine) Message(ctx context.Context, mailboxID, id int64) (MessageDetail, error) {
	r, err := e.row(ctx, mailboxID, id, true)
	if err != nil {
		return MessageDetail{}, err
	}
	d := MessageDetail{MessageSummary: r.summary(), View: View{Headers: []Header{}, Attachments: []AttachmentInfo{}}}
	if r.RawOmitted || r.Raw == nil {
		return d, nil
	}
	zr, err := openRaw(r.RawCodec, r.Raw)
	if err != nil {
		return MessageDetail{}, fmt.Errorf("open raw message %d: %w", id, err)
	}
	defer zr.Close()
	v, err := buildView(zr)
	if err != nil {
		// Stored, so it parsed once; keep the summary.
		e.log.Warn("message view", "message", id, "error", err)
	}
	d.View = v
	return d, nil
}

// RawMessage returns the message's bytes as the server sent them, and
// their size. The caller closes the reader.
func (e *Engine) RawMessage(ctx context.Context, mailboxID, id int64) (io.ReadCloser, int64, error) {
	r, err := e.row(ctx, mailboxID, id, true)
	if err != nil {
		return nil, 0, err
	}
	if r.RawOmitted || r.Raw == nil {
		return nil, 0, errRawNotStored
	}
	zr, err := openRaw(r.RawCodec, r.Raw)
	if err != nil {
		return nil, 0, fmt.Errorf("open raw message %d: %w", id, err)
	}
	return zr, r.Size, nil
}

// MailboxStatus is a mailbox's sync status with its counts.
type MailboxStatus struct {
	State       string     `json:"state"`
	LastSyncAt  *time.Time `json:"last_sync_at"`
	LastSyncOK  bool       `json:"last_sync_ok"`
	LastError   string     `json:"last_error,omitempty"`
	AuthFailed  bool       `json:"auth_failed"`
	Total       int        `json:"total"`       // messages on the server in the selected folders, as last seen
	Synced      int        `json:"synced"`      // of those, stored
	Quarantined int        `json:"quarantined"` // messages left out after failing to parse
}

// Status returns the mailbox's sync status and counts.
func (e *Engine) Status(ctx context.Context, mailboxID int64) (MailboxStatus, error) {
	mb, err := e.mbs.ByID(ctx, mailboxID)
	if err != nil {
		return MailboxStatus{}, err
	}
	st := MailboxStatus{State: mb.SyncState, LastSyncAt: mb.LastSyncAt, LastSyncOK: mb.LastSyncOK, LastError: mb.LastError, AuthFailed: mb.AuthFailed}
	var sums struct{ Total, Synced int }
	if err := e.db.WithContext(ctx).Model(&mailbox.FolderRow{}).Select("COALESCE(SUM(total), 0) AS total, COALESCE(SUM(synced), 0) AS synced").
		Where("mailbox_id = ? AND selected = ?", mailboxID, true).Scan(&sums).Error; err != nil {
		return MailboxStatus{}, fmt.Errorf("count messages of mailbox %d: %w", mailboxID, err)
	}
	var q int64
	if err := e.db.WithContext(ctx).Model(&quarantineRow{}).Where("mailbox_id = ? AND quarantined = ?", mailboxID, true).Count(&q).Error; err != nil {
		return MailboxStatus{}, fmt.Errorf("count quarantined messages of mailbox %d: %w", mailboxID, err)
	}
	st.Total, st.Synced, st.Quarantined = sums.Total, sums.Synced, int(q)
	return st, nil
}
