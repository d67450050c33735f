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

// The admin's SMTP accounts: the list, the form (Apply, Save, Save and add
// another, Cancel), the Check button and deletion.

type accountsView struct {
	Accounts []outgoing.Account
}

func (s *server) accountList(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	as, err := s.deps.Outgoing.ListAccounts(r.Context())
	if err != nil {
		return err
	}
	return s.render(w, r, rc, http.StatusOK, "accounts", "accounts.title", accountsView{Accounts: as})
}

type accountFormView struct {
	ID      int64 // 0 for a new account
	Form    *formState
	Report  *outgoing.Report
	Account *outgoing.Account
}

func (s *server) accountNew(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	f := newForm()
	f.Values.Set("active", "on")
	f.Values.Set("security", string(outgoing.SecuritySSL))
	f.Values.Set("port", "465")
	f.Values.Set("auth", string(outgoing.AuthLogin))
	f.Values.Set("daily_limit", "0")
	return s.render(w, r, rc, http.StatusOK, "account_form", "accounts.new", accountFormView{Form: f})
}

func (s *server) accountEdit(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	a, err := s.deps.Outgoing.GetAccount(r.Context(), id)
	if err != nil {
		return err
	}
	return s.render(w, r, rc, http.StatusOK, "account_form", "accounts.edit", accountFormView{ID: id, Form: accountForm(a), Account: &a})
}

func accountForm(a outgoing.Account) *formState {
	f := newForm()
	if a.Active {
		f.Values.Set("active", "on")
	}
	if a.SharedWithUsers {
		f.Values.Set("shared_with_users", "on")
	}
	f.Values.Set("sender_name", a.SenderName)
	f.Values.Set("email", a.Email)
	f.Values.Set("host", a.Host)
	f.Values.Set("port", strconv.Itoa(a.Port))
	f.Values.Set("security", string(a.Security))
	f.Values.Set("auth", string(a.Auth))
	f.Values.Set("login", a.Login)
	f.Values.Set("daily_limit", strconv.Itoa(a.DailyLimit))
	return f
}

// accountInput reads the form; an empty password keeps the stored one on
// change (and is simply missing on create).
func accountInput(lang i18n.Lang, r *http.Request, f *formState) (outgoing.AccountInput, bool) {
	pf := r.PostForm
	str := func(name string) *string { v := strings.TrimSpace(pf.Get(name)); return &v }
	active, shared := f.Checked("active"), f.Checked("shared_with_users")
	sec, auth := outgoing.Security(pf.Get("security")), outgoing.AuthMethod(pf.Get("auth"))
	in := outgoing.AccountInput{
		Active: &active, SharedWithUsers: &shared, SenderName: str("sender_name"), Email: str("email"),
		Host: str("host"), Login: str("login"), Security: &sec, Auth: &auth,
	}
	ok := true
	if port, good := atoiField(lang, f, "port", pf.Get("port")); good {
		in.Port = &port
	} else {
		ok = false
	}
	if limit, good := atoiField(lang, f, "daily_limit", pf.Get("daily_limit")); good {
		in.DailyLimit = &limit
	} else {
		ok = false
	}
	if pw := pf.Get("password"); pw != "" {
		p := secret.Secret(pw)
		in.Password = &p
	}
	if auth == outgoing.AuthNone {
		empty := ""
		in.Login = &empty
	}
	return in, ok
}

func (s *server) accountCreate(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	return s.accountSave(w, r, rc, 0)
}

func (s *server) accountUpdate(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	return s.accountSave(w, r, rc, id)
}

// accountSave handles the form's buttons: check (nothing saved), save,
// apply (stay on the form) and add (a blank form next).
func (s *server) accountSave(w http.ResponseWriter, r *http.Request, rc *reqCtx, id int64) error {
	f := formFrom(r)
	view := accountFormView{ID: id, Form: f}
	title := "accounts.new"
	if id != 0 {
		title = "accounts.edit"
		a, err := s.deps.Outgoing.GetAccount(r.Context(), id)
		if err != nil {
			return err
		}
		view.Account = &a
	}
	in, ok := accountInput(rc.lang, r, f)
	if !ok {
		return s.render(w, r, rc, http.StatusBadRequest, "account_form", title, view)
	}
	action := r.PostForm.Get("action")
	if action == "check" {
		var base *int64
		if id != 0 {
			base = &id
		}
		rep, err := s.deps.Outgoing.CheckSettings(r.Context(), rc.caller(), base, in)
		if err != nil {
			if status, ok := s.formError(rc, f, err, nil); ok {
				return s.render(w, r, rc, status, "account_form", title, view)
			}
			return err
		}
		view.Report = &rep
		return s.render(w, r, rc, http.StatusOK, "account_form", title, view)
	}
	var (
		a   outgoing.Account
		err error
	)
	if id == 0 {
		a, _, err = s.deps.Outgoing.CreateAccount(r.Context(), rc.caller(), in)
	} else {
		a, _, err = s.deps.Outgoing.UpdateAccount(r.Context(), rc.caller(), id, in)
	}
	if err != nil {
		view.Report = reportOf(err)
		if status, ok := s.formError(rc, f, err, nil); ok {
			return s.render(w, r, rc, status, "account_form", title, view)
		}
		return err
	}
	switch action {
	case "apply":
		return s.redirect(w, r, rc, "/accounts/"+strconv.FormatInt(a.ID, 10), "accounts.saved", a.Email)
	case "add":
		return s.redirect(w, r, rc, "/accounts/new", "accounts.saved", a.Email)
	default:
		return s.redirect(w, r, rc, "/accounts", "accounts.saved", a.Email)
	}
}

// accountCheck is the Check button's fetch: the report as an HTML fragment.
func (s *server) accountCheck(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	f := formFrom(r)
	in, ok := accountInput(rc.lang, r, f)
	if !ok {
		return s.renderFragment(w, r, rc, http.StatusBadRequest, "account_form", "checkfragment", checkResult{Form: f})
	}
	var base *int64
	if v := r.PostForm.Get("id"); v != "" && v != "0" {
		id, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return apperr.NotFound("SMTP account")
		}
		base = &id
	}
	rep, err := s.deps.Outgoing.CheckSettings(r.Context(), rc.caller(), base, in)
	if err != nil {
		if status, ok := s.formError(rc, f, err, nil); ok {
			return s.renderFragment(w, r, rc, status, "account_form", "checkfragment", checkResult{Form: f})
		}
		return err
	}
	return s.renderFragment(w, r, rc, http.StatusOK, "account_form", "checkfragment", checkResult{Report: &rep})
}

func (s *server) accountDelete(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	a, err := s.deps.Outgoing.GetAccount(r.Context(), id)
	if err != nil {
		return err
	}
	if err := s.deps.Outgoing.DeleteAccount(r.Context(), id); err != nil {
		return err
	}
	return s.redirect(w, r, rc, "/accounts", "accounts.deleted", a.Email)
}

// checkResult is what the "checkresult" fragment shows: a report, or the
// form's error when the input could not be checked.
type checkResult struct {
	Report *outgoing.Report
	Form   *formState
}

// reportOf returns the check report a refused save carries.
func reportOf(err error) *outgoing.Report {
	e, ok := apperr.As(err)
	if !ok {
		return nil
	}
	switch d := e.Detail.(type) {
	case outgoing.Report:
		return &d
	case *outgoing.Report:
		return d
	case mailbox.IMAPCheckResult:
		return &d.Report
	}
	return nil
}

// formError puts an input or refusal error on the form and returns the
// status to answer with; ok is false for errors a form cannot show (the
// caller fails the page with them).
func (s *server) formError(rc *reqCtx, f *formState, err error, fields map[string]string) (int, bool) {
	e, ok := apperr.As(err)
	if !ok {
		return 0, false
	}
	var status int
	switch {
	case errors.Is(err, apperr.ErrInvalid):
		status = http.StatusBadRequest
	case errors.Is(err, apperr.ErrUnprocessable):
		status = http.StatusUnprocessableEntity
	case errors.Is(err, apperr.ErrConflict):
		status = http.StatusConflict
	case errors.Is(err, apperr.ErrRateLimited):
		status = http.StatusTooManyRequests
	case errors.Is(err, apperr.ErrUnavailable):
		status = http.StatusServiceUnavailable
	case errors.Is(err, apperr.ErrForbidden):
		status = http.StatusForbidden
	default:
		return 0, false
	}
	if e.Code == "check_failed" {
		if rep := reportOf(err); rep != nil {
			f.Summary = i18n.T(rc.lang, "web.check.failed_nothing_saved", stepName(rc.lang, rep.Failed))
			return status, true
		}
	}
	f.setError(rc.lang, err, fields)
	return status, true
}

func stepName(lang i18n.Lang, step outgoing.Step) string {
	p := &page{Lang: lang}
	return p.Step(step)
}
