package web

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/users"
)

// Users and API tokens (admins): the user list, adding a user with a
// first token, and each user's tokens with issuing and revoking. A token
// is shown once, in the response that issued it, and never again.

type usersView struct {
	Users    []users.User
	Form     *formState
	NewToken string // shown once
	NewUser  *users.User
}

func (s *server) needAdminStore() error {
	if s.admin == nil {
		return apperr.NotFound("page")
	}
	return nil
}

func (s *server) userList(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	if err := s.needAdminStore(); err != nil {
		return err
	}
	return s.renderUsers(w, r, rc, http.StatusOK, usersView{Form: newForm()})
}

func (s *server) renderUsers(w http.ResponseWriter, r *http.Request, rc *reqCtx, status int, v usersView) error {
	list, err := s.admin.List(r.Context())
	if err != nil {
		return err
	}
	v.Users = list
	return s.render(w, r, rc, status, "users", "users.title", v)
}

func (s *server) userCreate(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	if err := s.needAdminStore(); err != nil {
		return err
	}
	f := formFrom(r)
	u, tok, err := s.admin.CreateWithToken(r.Context(), r.PostForm.Get("email"), r.PostForm.Get("name"), f.Checked("admin"))
	if err != nil {
		if status, ok := s.formError(rc, f, err, nil); ok {
			return s.renderUsers(w, r, rc, status, usersView{Form: f})
		}
		return err
	}
	return s.renderUsers(w, r, rc, http.StatusCreated, usersView{Form: newForm(), NewToken: tok.Reveal(), NewUser: &u})
}

type userView struct {
	User     users.User
	Tokens   []users.Token
	Form     *formState
	NewToken string
}

func (s *server) userView(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	if err := s.needAdminStore(); err != nil {
		return err
	}
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	return s.renderUser(w, r, rc, http.StatusOK, id, userView{Form: newForm()})
}

func (s *server) renderUser(w http.ResponseWriter, r *http.Request, rc *reqCtx, status int, id int64, v userView) error {
	u, err := s.admin.ByID(r.Context(), id)
	if err != nil {
		return err
	}
	toks, err := s.admin.Tokens(r.Context(), id)
	if err != nil {
		return err
	}
	v.User, v.Tokens = u, toks
	return s.render(w, r, rc, status, "user", "users.user_title", v)
}

func (s *server) tokenIssue(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	if err := s.needAdminStore(); err != nil {
		return err
	}
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	if _, err := s.admin.ByID(r.Context(), id); err != nil {
		return err
	}
	f := formFrom(r)
	name := strings.TrimSpace(r.PostForm.Get("name"))
	if name == "" || len(name) > 100 || strings.ContainsAny(name, "\r\n\x00") {
		f.Errors["name"] = rc.T("error.token_name")
		f.Summary = rc.T("form.fix")
		return s.renderUser(w, r, rc, http.StatusBadRequest, id, userView{Form: f})
	}
	tok, err := s.admin.IssueToken(r.Context(), id, name)
	if err != nil {
		return err
	}
	return s.renderUser(w, r, rc, http.StatusCreated, id, userView{Form: newForm(), NewToken: tok.Reveal()})
}

func (s *server) tokenRevoke(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	if err := s.needAdminStore(); err != nil {
		return err
	}
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	tid, err := pathID(r, "tid")
	if err != nil {
		return err
	}
	if err := s.admin.RevokeToken(r.Context(), id, tid); err != nil {
		return err
	}
	return s.redirect(w, r, rc, "/users/"+strconv.FormatInt(id, 10), "users.revoked")
}
