package web

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/mailbox"
	imapsync "github.com/mailsync/mailsync/sync"
)

type messagesView struct {
	Mailbox     mailbox.Mailbox
	Folder      string
	Folders     []mailbox.FolderRow
	Unavailable bool
	Page        imapsync.MessagePage
	Next        string
	First       string
	Error       string
}

// messageList lists a mailbox's synced messages, newest first, one folder
// or all, paged by cursor.
func (s *server) messageList(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	mb, err := s.deps.Mailboxes.Get(r.Context(), rc.caller(), id)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	v := messagesView{Mailbox: mb, Folder: q.Get("folder")}
	if s.deps.Messages == nil {
		v.Unavailable = true
		return s.render(w, r, rc, http.StatusOK, "messages", "messages.title", v)
	}
	if v.Folders, err = s.deps.Mailboxes.Folders(r.Context(), rc.caller(), id); err != nil {
		return err
	}
	status := http.StatusOK
	page, err := s.deps.Messages.ListMessages(r.Context(), id, imapsync.ListQuery{Folder: v.Folder, Cursor: q.Get("cursor")})
	if err != nil {
		e, ok := apperr.As(err)
		if !ok || !errors.Is(err, apperr.ErrInvalid) {
			return err
		}
		v.Error, status = errorText(rc.lang, e), http.StatusBadRequest
	}
	v.Page = page
	base := "/mailboxes/" + strconv.FormatInt(id, 10) + "/messages"
	link := func(cursor string) string {
		p := url.Values{}
		if v.Folder != "" {
			p.Set("folder", v.Folder)
		}
		if cursor != "" {
			p.Set("cursor", cursor)
		}
		if len(p) == 0 {
			return base
		}
		return base + "?" + p.Encode()
	}
	if page.NextCursor != "" {
		v.Next = link(page.NextCursor)
	}
	if q.Get("cursor") != "" {
		v.First = link("")
	}
	return s.render(w, r, rc, status, "messages", "messages.title", v)
}

type messageView struct {
	Mailbox     mailbox.Mailbox
	Unavailable bool
	Message     imapsync.MessageDetail
}

// messageView shows one message: its headers and its text. HTML bodies are
// not rendered (they would need sanitising and would load remote images);
// the text part is shown, escaped.
func (s *server) messageView(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	mid, err := pathID(r, "mid")
	if err != nil {
		return err
	}
	mb, err := s.deps.Mailboxes.Get(r.Context(), rc.caller(), id)
	if err != nil {
		return err
	}
	v := messageView{Mailbox: mb}
	if s.deps.Messages == nil {
		v.Unavailable = true
		return s.render(w, r, rc, http.StatusOK, "message", "messages.title", v)
	}
	if v.Message, err = s.deps.Messages.Message(r.Context(), id, mid); err != nil {
		return err
	}
	return s.render(w, r, rc, http.StatusOK, "message", "messages.title", v)
}
