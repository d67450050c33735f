package api

import (
	"context"
	"io"
	"net/http"
	"strconv"

	"github.com/mailsync/mailsync/internal/apperr"
	imapsync "github.com/mailsync/mailsync/sync"
)

// Messages is what the API needs of the IMAP sync engine. It does not
// check who asks: the handlers check that the caller may see the mailbox
// (its owner or an admin) through Mailboxes.Get first.
type Messages interface {
	ListMessages(ctx context.Context, mailboxID int64, q imapsync.ListQuery) (imapsync.MessagePage, error)
	Message(ctx context.Context, mailboxID, id int64) (imapsync.MessageDetail, error)
	RawMessage(ctx context.Context, mailboxID, id int64) (io.ReadCloser, int64, error)
	SyncNow(ctx context.Context, mailboxID int64) error
	Status(ctx context.Context, mailboxID int64) (imapsync.MailboxStatus, error)
}

// messagesFor checks the caller may see the mailbox of the request's {id}
// and returns its id.
func (s *Server) messagesFor(r *http.Request) (int64, error) {
	id, err := pathID(r, "id")
	if err != nil {
		return 0, err
	}
	if _, err := s.deps.Mailboxes.Get(r.Context(), outgoingCaller(r), id); err != nil {
		return 0, err
	}
	if s.deps.Messages == nil {
		return 0, apperr.New(apperr.ErrUnavailable, "sync_off", "the IMAP sync is not running on this server")
	}
	return id, nil
}

// listMessages: GET /api/v1/mailboxes/{id}/messages?folder=&cursor=&limit=
// — newest first; next_cursor fetches the next page.
func (s *Server) listMessages(w http.ResponseWriter, r *http.Request) error {
	id, err := s.messagesFor(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	in := imapsync.ListQuery{Folder: q.Get("folder"), Cursor: q.Get("cursor")}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 {
			return apperr.Invalid("limit", "invalid_limit", "limit must be a whole number from 1 to %d", imapsync.MaxListLimit)
		}
		in.Limit = n
	}
	page, err := s.deps.Messages.ListMessages(r.Context(), id, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// getMessage: GET /api/v1/mailboxes/{id}/messages/{message_id} — headers,
// text, HTML and attachments; with ?format=raw the message as the server
// sent it (message/rfc822).
func (s *Server) getMessage(w http.ResponseWriter, r *http.Request) error {
	id, err := s.messagesFor(r)
	if err != nil {
		return err
	}
	msgID, err := pathID(r, "message_id")
	if err != nil {
		return err
	}
	switch format := r.URL.Query().Get("format"); format {
	case "", "json":
	case "raw":
		body, size, err := s.deps.Messages.RawMessage(r.Context(), id, msgID)
		if err != nil {
			return err
		}
		defer body.Close()
		h := w.Header()
		h.Set("Content-Type", "message/rfc822")
		h.Set("Content-Length", strconv.FormatInt(size, 10))
		h.Set("Content-Disposition", `attachment; filename="message-`+strconv.FormatInt(msgID, 10)+`.eml"`)
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(http.StatusOK)
		if _, err := io.Copy(w, body); err != nil {
			s.log.WarnContext(r.Context(), "raw message cut short", "message", msgID, "error", err)
		}
		return nil
	default:
		return apperr.Invalid("format", "invalid_choice", "format must be json or raw, not %q", format)
	}
	m, err := s.deps.Messages.Message(r.Context(), id, msgID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, m)
	return nil
}

// syncMailbox: POST /api/v1/mailboxes/{id}/sync — a sync pass now; 202,
// with the status as it stands.
func (s *Server) syncMailbox(w http.ResponseWriter, r *http.Request) error {
	id, err := s.messagesFor(r)
	if err != nil {
		return err
	}
	if err := s.deps.Messages.SyncNow(r.Context(), id); err != nil {
		return err
	}
	st, err := s.deps.Messages.Status(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"queued": true, "sync": st})
	return nil
}
