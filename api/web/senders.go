package web

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/outgoing"
)

// CRM senders: the list with each sender's kind and whether it can be
// deleted (or why not), own SMTP servers (checked on save), addresses
// confirmed by a mailed code, and the CRM mail form with its "From" picker.

type sendersView struct {
	Senders []outgoing.SenderView
}

func (s *server) senderList(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	list, err := s.deps.Senders.Senders(r.Context(), rc.caller())
	if err != nil {
		return err
	}
	return s.render(w, r, rc, http.StatusOK, "senders", "senders.title", sendersView{Senders: list})
}

type senderFormView struct {
	Form   *formState
	Report *outgoing.Report
}

func (s *server) senderSMTPForm(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	f := newForm()
	f.Values.Set("email", r.URL.Query().Get("email"))
	f.Values.Set("smtp.port", "465")
	f.Values.Set("smtp.security", string(outgoing.SecuritySSL))
	f.Values.Set("smtp.auth", string(outgoing.AuthLogin))
	return s.render(w, r, rc, http.StatusOK, "sender_smtp", "senders.smtp_title", senderFormView{Form: f})
}

// senderSMTPCreate checks the own SMTP server with the address as sender
// and saves it only when the check passes.
func (s *server) senderSMTPCreate(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	f := formFrom(r)
	pf := r.PostForm
	view := senderFormView{Form: f}
	port, ok := atoiField(rc.lang, f, "smtp.port", pf.Get("smtp.port"))
	if !ok {
		return s.render(w, r, rc, http.StatusBadRequest, "sender_smtp", "senders.smtp_title", view)
	}
	set := outgoing.Settings{Host: strings.TrimSpace(pf.Get("smtp.host")), Port: port,
		Security: outgoing.Security(pf.Get("smtp.security")), Auth: outgoing.AuthMethod(pf.Get("smtp.auth")),
		Login: strings.TrimSpace(pf.Get("smtp.login")), Password: secret.Secret(pf.Get("smtp.password"))}
	if set.Auth == "" {
		set.Auth = outgoing.AuthLogin
	}
	if set.Auth == outgoing.AuthNone {
		set.Login, set.Password = "", ""
	}
	sd, _, err := s.deps.Senders.CreateSMTPSender(r.Context(), rc.caller(), outgoing.SMTPSenderInput{
		Email: pf.Get("email"), Name: pf.Get("name"), Shared: f.Checked("shared"), Settings: set,
	})
	if err != nil {
		view.Report = reportOf(err)
		if status, ok := s.formError(rc, f, err, nil); ok {
			return s.render(w, r, rc, status, "sender_smtp", "senders.smtp_title", view)
		}
		return err
	}
	return s.redirect(w, r, rc, "/senders", "senders.added", sd.Email)
}

func (s *server) senderDelete(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id := r.PathValue("id")
	v, err := s.deps.Senders.GetSender(r.Context(), rc.caller(), id)
	if err != nil {
		return err
	}
	if err := s.deps.Senders.DeleteSender(r.Context(), rc.caller(), id); err != nil {
		return err
	}
	return s.redirect(w, r, rc, "/senders", "senders.deleted", v.Email)
}

type confirmView struct {
	ID    int64
	Email string
	Form  *formState
}

func (s *server) confirmForm(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	return s.render(w, r, rc, http.StatusOK, "sender_confirm", "senders.confirm_title", confirmView{Form: newForm()})
}

// confirmStart mails a code to the address and moves on to the code form.
func (s *server) confirmStart(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	f := formFrom(r)
	pf := r.PostForm
	id, err := s.deps.Senders.StartConfirmation(r.Context(), rc.caller(), pf.Get("email"), pf.Get("name"), f.Checked("shared"))
	if err != nil {
		if status, ok := s.formError(rc, f, err, nil); ok {
			return s.render(w, r, rc, status, "sender_confirm", "senders.confirm_title", confirmView{Form: f})
		}
		return err
	}
	return s.redirect(w, r, rc, "/senders/confirm/"+strconv.FormatInt(id, 10)+"?email="+urlQueryEscape(strings.TrimSpace(pf.Get("email"))),
		"senders.code_sent", strings.TrimSpace(pf.Get("email")))
}

func (s *server) confirmCodeForm(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	return s.render(w, r, rc, http.StatusOK, "sender_code", "senders.code_title",
		confirmView{ID: id, Email: r.URL.Query().Get("email"), Form: newForm()})
}

// confirmCode checks the code; a right one adds the sender.
func (s *server) confirmCode(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	f := formFrom(r)
	v, err := s.deps.Senders.Confirm(r.Context(), rc.caller(), id, r.PostForm.Get("code"))
	if err != nil {
		if e, ok := apperr.As(err); ok && e.Code == "not_found" {
			return err
		}
		if status, ok := s.formError(rc, f, err, nil); ok {
			return s.render(w, r, rc, status, "sender_code", "senders.code_title",
				confirmView{ID: id, Email: r.PostForm.Get("email"), Form: f})
		}
		return err
	}
	return s.redirect(w, r, rc, "/senders", "senders.confirmed", v.Email)
}

type composeView struct {
	Senders []outgoing.SenderView
	Form    *formState
}

// composeForm is the CRM mail form: From (the sender picker, with "Add
// sender" and "SMTP servers"), To, CC, BCC, Subject, the text, "send me a
// copy" and the CRM record.
func (s *server) composeForm(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	list, err := s.deps.Senders.Senders(r.Context(), rc.caller())
	if err != nil {
		return err
	}
	return s.render(w, r, rc, http.StatusOK, "compose", "compose.title", composeView{Senders: list, Form: newForm()})
}

func splitAddrs(v string) []string {
	var out []string
	for a := range strings.FieldsFuncSeq(v, func(r rune) bool { return r == ',' || r == ';' || r == '\n' }) {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

func (s *server) composeSend(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	f := formFrom(r)
	pf := r.PostForm
	d := outgoing.Draft{To: splitAddrs(pf.Get("to")), Cc: splitAddrs(pf.Get("cc")), Bcc: splitAddrs(pf.Get("bcc")),
		Subject: pf.Get("subject"), Text: pf.Get("text")}
	opts := outgoing.SubmitOptions{SenderID: pf.Get("sender_id"), CopyToSelf: f.Checked("copy_to_self")}
	if et, eid := pf.Get("crm_type"), strings.TrimSpace(pf.Get("crm_id")); et != "" || eid != "" {
		opts.CRM = &outgoing.CRMRef{EntityType: et, EntityID: eid}
	}
	status := http.StatusBadRequest
	if opts.SenderID == "" {
		f.Errors["sender_id"] = rc.T("error.required")
		f.Summary = rc.T("form.fix")
	} else if _, err := s.deps.Outgoing.Submit(r.Context(), rc.caller(), d, opts); err != nil {
		var ok bool
		if status, ok = s.formError(rc, f, err, map[string]string{"crm.entity_type": "crm_type", "crm.entity_id": "crm_id", "from": "sender_id", "sender_id": "sender_id"}); !ok {
			if e, isApp := apperr.As(err); isApp && e.Kind == apperr.ErrNotFound {
				f.Errors["sender_id"] = errorText(rc.lang, e)
				f.Summary = rc.T("form.fix")
				status = http.StatusBadRequest
			} else {
				return err
			}
		}
	} else {
		return s.redirect(w, r, rc, "/log", "compose.queued")
	}
	list, err := s.deps.Senders.Senders(r.Context(), rc.caller())
	if err != nil {
		return err
	}
	return s.render(w, r, rc, status, "compose", "compose.title", composeView{Senders: list, Form: f})
}
