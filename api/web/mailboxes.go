package web

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/i18n"
	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/mailbox"
	"github.com/mailsync/mailsync/outgoing"
)

// Mail: the mailbox list, the connect form with provider presets, the
// settings dialog with the outgoing block, and the folders to sync.

type mailboxesView struct {
	Mailboxes []mailbox.Mailbox
}

func (s *server) mailboxList(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	list, err := s.deps.Mailboxes.List(r.Context(), rc.caller())
	if err != nil {
		return err
	}
	return s.render(w, r, rc, http.StatusOK, "mailboxes", "mailboxes.title", mailboxesView{Mailboxes: list})
}

type connectView struct {
	Form      *formState
	Providers []mailbox.Provider
	Report    *outgoing.Report
	Found     string // the provider a lookup found, by name
	NotFound  bool   // a lookup found no preset
}

func (s *server) mailboxNew(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	f := newForm()
	f.Values.Set("imap.port", "993")
	f.Values.Set("imap.security", string(outgoing.SecuritySSL))
	return s.render(w, r, rc, http.StatusOK, "mailbox_connect", "mailboxes.connect", connectView{Form: f, Providers: mailbox.Providers()})
}

// fillPreset writes a preset's IMAP settings into the form.
func fillPreset(f *formState, p mailbox.Provider) {
	f.Values.Set("provider", p.ID)
	f.Values.Set("imap.host", p.IMAP.Host)
	f.Values.Set("imap.port", strconv.Itoa(p.IMAP.Port))
	f.Values.Set("imap.security", string(p.IMAP.Security))
	if email := strings.TrimSpace(f.Get("email")); email != "" {
		f.Values.Set("imap.login", p.LoginFor(email))
	}
}

// mailboxConnect handles the connect form's two buttons: "find settings"
// (the preset for the address, or the chosen preset, filled in) and
// "connect" (checked before anything is saved).
func (s *server) mailboxConnect(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	f := formFrom(r)
	view := connectView{Form: f, Providers: mailbox.Providers()}
	providerID := r.PostForm.Get("provider")
	if r.PostForm.Get("action") == "lookup" {
		if providerID != "" {
			if p, ok := mailbox.ProviderByID(providerID); ok {
				fillPreset(f, p)
				view.Found = p.Name
			}
		} else if s.deps.Providers != nil {
			p, _, ok, err := s.deps.Providers.Find(r.Context(), r.PostForm.Get("email"))
			switch {
			case err != nil:
				if _, ok := s.formError(rc, f, err, nil); !ok {
					return err
				}
			case ok:
				fillPreset(f, p)
				view.Found = p.Name
			default:
				view.NotFound = true
				if f.Get("imap.login") == "" {
					f.Values.Set("imap.login", strings.TrimSpace(f.Get("email")))
				}
			}
		}
		return s.render(w, r, rc, http.StatusOK, "mailbox_connect", "mailboxes.connect", view)
	}
	in := mailbox.ConnectInput{
		Email: r.PostForm.Get("email"), Name: r.PostForm.Get("name"),
		Password: secret.Secret(r.PostForm.Get("password")), Provider: providerID,
	}
	if providerID == "" {
		port, ok := atoiField(rc.lang, f, "imap.port", r.PostForm.Get("imap.port"))
		if !ok {
			return s.render(w, r, rc, http.StatusBadRequest, "mailbox_connect", "mailboxes.connect", view)
		}
		in.IMAP = &mailbox.IMAPEndpoint{Host: strings.TrimSpace(r.PostForm.Get("imap.host")), Port: port,
			Security: outgoing.Security(r.PostForm.Get("imap.security")), Login: strings.TrimSpace(r.PostForm.Get("imap.login"))}
	}
	mb, _, err := s.deps.Mailboxes.Connect(r.Context(), rc.caller(), in)
	if err != nil {
		view.Report = reportOf(err)
		if status, ok := s.formError(rc, f, err, nil); ok {
			return s.render(w, r, rc, status, "mailbox_connect", "mailboxes.connect", view)
		}
		return err
	}
	return s.redirect(w, r, rc, "/mailboxes/"+strconv.FormatInt(mb.ID, 10), "mailboxes.connected", mb.Email)
}

type settingsView struct {
	Mailbox    mailbox.Mailbox
	Provider   *mailbox.Provider
	Status     *mailbox.OutgoingStatus
	SMTP       *outgoing.Settings // what the block uses, when on
	Suggestion *outgoing.Settings // the CRM sender's server, when off
	IMAPForm   *formState
	OutForm    *formState
	IMAPReport *outgoing.Report
	OutReport  *outgoing.Report // a Check or a refused save
	Messages   bool
}

// Auto describes what "automatic" SMTP settings would be: the preset's,
// the same-address system account's or the CRM sender's.
func (v settingsView) Auto() *outgoing.Settings {
	if v.Mailbox.OutEnabled && v.Mailbox.OutSource != mailbox.SourceManual && v.SMTP != nil {
		return v.SMTP
	}
	if !v.Mailbox.OutEnabled {
		if v.Suggestion != nil {
			return v.Suggestion
		}
		if v.Provider != nil {
			return &outgoing.Settings{Host: v.Provider.SMTP.Host, Port: v.Provider.SMTP.Port, Security: v.Provider.SMTP.Security}
		}
	}
	return nil
}

func (s *server) loadSettings(r *http.Request, rc *reqCtx, id int64) (settingsView, error) {
	sv, err := s.deps.Mailboxes.Settings(r.Context(), rc.caller(), id)
	if err != nil {
		return settingsView{}, err
	}
	mb := sv.Mailbox
	v := settingsView{Mailbox: mb, Status: sv.Status, SMTP: sv.SMTP, Suggestion: sv.Suggestion, Messages: s.deps.Messages != nil}
	if p, ok := mailbox.ProviderByID(mb.Provider); ok {
		v.Provider = &p
	}
	v.IMAPForm = newForm()
	v.IMAPForm.Values.Set("name", mb.Name)
	v.IMAPForm.Values.Set("imap.host", mb.IMAPHost)
	v.IMAPForm.Values.Set("imap.port", strconv.Itoa(mb.IMAPPort))
	v.IMAPForm.Values.Set("imap.security", string(mb.IMAPSecurity))
	v.IMAPForm.Values.Set("imap.login", mb.IMAPLogin)
	v.OutForm = newForm()
	if mb.OutEnabled {
		v.OutForm.Values.Set("enabled", "on")
	}
	if mb.OutSaveCopy {
		v.OutForm.Values.Set("save_copy", "on")
	}
	v.OutForm.Values.Set("smtp.security", string(outgoing.SecuritySSL))
	v.OutForm.Values.Set("smtp.auth", string(outgoing.AuthLogin))
	if mb.OutEnabled && mb.OutSource == mailbox.SourceManual && sv.SMTP != nil {
		v.OutForm.Values.Set("smtp.host", sv.SMTP.Host)
		v.OutForm.Values.Set("smtp.port", strconv.Itoa(sv.SMTP.Port))
		v.OutForm.Values.Set("smtp.security", string(sv.SMTP.Security))
		v.OutForm.Values.Set("smtp.auth", string(sv.SMTP.Auth))
		v.OutForm.Values.Set("smtp.login", sv.SMTP.Login)
	}
	return v, nil
}

// mailboxSettings is the settings dialog: the outgoing block's saved
// settings are checked as the page opens, and the result shown.
func (s *server) mailboxSettings(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	v, err := s.loadSettings(r, rc, id)
	if err != nil {
		return err
	}
	return s.render(w, r, rc, http.StatusOK, "mailbox_settings", "mailboxes.settings", v)
}

// mailboxUpdate saves the name and the IMAP settings; a change to the
// connection is checked first and a failed check changes nothing.
func (s *server) mailboxUpdate(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	mb, err := s.deps.Mailboxes.Get(r.Context(), rc.caller(), id)
	if err != nil {
		return err
	}
	f := formFrom(r)
	pf := r.PostForm
	name := pf.Get("name")
	in := mailbox.UpdateInput{Name: &name}
	port, ok := atoiField(rc.lang, f, "imap.port", pf.Get("imap.port"))
	ep := mailbox.IMAPEndpoint{Host: strings.TrimSpace(pf.Get("imap.host")), Port: port,
		Security: outgoing.Security(pf.Get("imap.security")), Login: strings.TrimSpace(pf.Get("imap.login"))}
	if ok && (!strings.EqualFold(ep.Host, mb.IMAPHost) || ep.Port != mb.IMAPPort || ep.Security != mb.IMAPSecurity || ep.Login != mb.IMAPLogin) {
		in.IMAP = &ep
	}
	if pw := pf.Get("imap.password"); pw != "" {
		p := secret.Secret(pw)
		in.Password = &p
	}
	var status int
	var rep *outgoing.Report
	if ok {
		_, _, err = s.deps.Mailboxes.Update(r.Context(), rc.caller(), id, in)
		if err == nil {
			return s.redirect(w, r, rc, "/mailboxes/"+strconv.FormatInt(id, 10), "mailboxes.saved")
		}
		rep = reportOf(err)
		var handled bool
		if status, handled = s.formError(rc, f, err, nil); !handled {
			return err
		}
	} else {
		status = http.StatusBadRequest
	}
	v, err := s.loadSettings(r, rc, id)
	if err != nil {
		return err
	}
	v.IMAPForm, v.IMAPReport = f, rep
	return s.render(w, r, rc, status, "mailbox_settings", "mailboxes.settings", v)
}

// smtpInput reads the outgoing block's SMTP fields: nil when the server is
// left empty (the automatic settings: preset, system account or CRM
// sender); an empty password keeps the stored one.
func smtpInput(lang i18n.Lang, r *http.Request, f *formState) (*mailbox.SMTPInput, bool) {
	pf := r.PostForm
	host := strings.TrimSpace(pf.Get("smtp.host"))
	if host == "" {
		return nil, true
	}
	port, ok := atoiField(lang, f, "smtp.port", pf.Get("smtp.port"))
	in := &mailbox.SMTPInput{Host: host, Port: port, Security: outgoing.Security(pf.Get("smtp.security")),
		Auth: outgoing.AuthMethod(pf.Get("smtp.auth")), Login: strings.TrimSpace(pf.Get("smtp.login"))}
	if pw := pf.Get("smtp.password"); pw != "" {
		p := secret.Secret(pw)
		in.Password = &p
	}
	return in, ok
}

// mailboxOutgoing handles the outgoing block: Check (nothing saved) or
// save. Turning external SMTP on checks first and a failed check saves
// nothing; turning it off removes the mirrored CRM sender.
func (s *server) mailboxOutgoing(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	f := formFrom(r)
	in, ok := smtpInput(rc.lang, r, f)
	status := http.StatusBadRequest
	var rep *outgoing.Report
	if ok {
		if r.PostForm.Get("action") == "check" {
			var report outgoing.Report
			report, err = s.deps.Mailboxes.CheckOutgoing(r.Context(), rc.caller(), id, in)
			if err == nil {
				rep, status = &report, http.StatusOK
			}
		} else {
			_, rep, err = s.deps.Mailboxes.SetOutgoing(r.Context(), rc.caller(), id, mailbox.OutgoingInput{
				Enabled: f.Checked("enabled"), SaveCopy: f.Checked("save_copy"), SMTP: in,
			})
			if err == nil {
				return s.redirect(w, r, rc, "/mailboxes/"+strconv.FormatInt(id, 10), "mailboxes.outgoing_saved")
			}
		}
		if err != nil {
			if errors.Is(err, apperr.ErrNotFound) {
				return err
			}
			if got := reportOf(err); got != nil {
				rep = got
			}
			var handled bool
			if status, handled = s.formError(rc, f, err, nil); !handled {
				return err
			}
		}
	}
	v, err := s.loadSettings(r, rc, id)
	if err != nil {
		return err
	}
	v.OutForm, v.OutReport = f, rep
	return s.render(w, r, rc, status, "mailbox_settings", "mailboxes.settings", v)
}

// mailboxOutgoingCheck is the Check button's fetch.
func (s *server) mailboxOutgoingCheck(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	f := formFrom(r)
	in, ok := smtpInput(rc.lang, r, f)
	if !ok {
		return s.renderFragment(w, r, rc, http.StatusBadRequest, "mailbox_settings", "checkfragment", checkResult{Form: f})
	}
	rep, err := s.deps.Mailboxes.CheckOutgoing(r.Context(), rc.caller(), id, in)
	if err != nil {
		if errors.Is(err, apperr.ErrNotFound) {
			return err
		}
		if status, ok := s.formError(rc, f, err, nil); ok {
			return s.renderFragment(w, r, rc, status, "mailbox_settings", "checkfragment", checkResult{Form: f})
		}
		return err
	}
	return s.renderFragment(w, r, rc, http.StatusOK, "mailbox_settings", "checkfragment", checkResult{Report: &rep})
}

func (s *server) mailboxDelete(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	mb, err := s.deps.Mailboxes.Get(r.Context(), rc.caller(), id)
	if err != nil {
		return err
	}
	if err := s.deps.Mailboxes.Delete(r.Context(), rc.caller(), id); err != nil {
		return err
	}
	return s.redirect(w, r, rc, "/mailboxes", "mailboxes.deleted", mb.Email)
}

type foldersView struct {
	Mailbox  mailbox.Mailbox
	Folders  []mailbox.FolderRow
	Messages bool
	Error    string
}

func (s *server) folderList(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	mb, err := s.deps.Mailboxes.Get(r.Context(), rc.caller(), id)
	if err != nil {
		return err
	}
	folders, err := s.deps.Mailboxes.Folders(r.Context(), rc.caller(), id)
	if err != nil {
		return err
	}
	return s.render(w, r, rc, http.StatusOK, "folders", "folders.title",
		foldersView{Mailbox: mb, Folders: folders, Messages: s.deps.Messages != nil})
}

func (s *server) folderSave(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	names := r.PostForm["folder"]
	if names == nil {
		names = []string{}
	}
	if _, err := s.deps.Mailboxes.SetFolders(r.Context(), rc.caller(), id, names); err != nil {
		if e, ok := apperr.As(err); ok && errors.Is(err, apperr.ErrInvalid) {
			mb, gerr := s.deps.Mailboxes.Get(r.Context(), rc.caller(), id)
			if gerr != nil {
				return gerr
			}
			folders, ferr := s.deps.Mailboxes.Folders(r.Context(), rc.caller(), id)
			if ferr != nil {
				return ferr
			}
			return s.render(w, r, rc, http.StatusBadRequest, "folders", "folders.title",
				foldersView{Mailbox: mb, Folders: folders, Messages: s.deps.Messages != nil, Error: errorText(rc.lang, e)})
		}
		return err
	}
	return s.redirect(w, r, rc, "/mailboxes/"+strconv.FormatInt(id, 10)+"/folders", "folders.saved")
}
