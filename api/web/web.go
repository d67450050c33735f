package web

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/mailsync/mailsync/api"
	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/i18n"
	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/internal/users"
	"github.com/mailsync/mailsync/outgoing"
)

// Authenticator resolves the credential a session was opened with (an API
// token today; an OAuth or SSO login can plug in behind the same method) to
// its user.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (users.User, error)
}

// UserAdmin is what the users and tokens page needs. When Deps.Users
// implements it (as *users.Store does), admins get that page.
type UserAdmin interface {
	List(ctx context.Context) ([]users.User, error)
	ByID(ctx context.Context, id int64) (users.User, error)
	CreateWithToken(ctx context.Context, email, name string, admin bool) (users.User, secret.Secret, error)
	IssueToken(ctx context.Context, userID int64, name string) (secret.Secret, error)
	Tokens(ctx context.Context, userID int64) ([]users.Token, error)
	RevokeToken(ctx context.Context, userID, tokenID int64) error
}

// Deps are the services the pages call: the same ones the JSON API calls.
type Deps struct {
	Logger    *slog.Logger
	Users     Authenticator
	Outgoing  api.Outgoing
	Mailboxes api.Mailboxes
	Senders   api.Senders
	Providers api.ProviderLookup
	// Messages reads synced mail (the sync engine, as for the API); nil
	// makes the message pages say that sync is not available.
	Messages api.Messages
}

// Options tune the pages. Zero values mean the defaults.
type Options struct {
	// SecureCookies marks the cookies Secure on every response, for a
	// deployment behind a TLS-terminating proxy. Without it they are Secure
	// when the request itself came over TLS.
	SecureCookies bool
	// SessionIdle ends a session unused for this long (12 h).
	SessionIdle time.Duration
	// SessionMaxAge ends a session this long after sign-in (7 days).
	SessionMaxAge time.Duration
	// MaxSessions bounds the sessions kept in memory (10 000); past it the
	// least recently used is dropped.
	MaxSessions int
	// Now tells the time (tests); nil = time.Now.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.SessionIdle <= 0 {
		o.SessionIdle = 12 * time.Hour
	}
	if o.SessionMaxAge <= 0 {
		o.SessionMaxAge = 7 * 24 * time.Hour
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = 10_000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// access is what a page requires of its visitor.
type access int

const (
	public access = iota
	signedIn
	adminOnly
)

// reqCtx is what the wrapper found out about a request.
type reqCtx struct {
	lang i18n.Lang
	sess *session // nil before sign-in
	user users.User
	csrf string // the token forms on this page carry
}

func (rc *reqCtx) caller() outgoing.Caller {
	return outgoing.Caller{UserID: rc.user.ID, Admin: rc.user.Admin, Lang: string(rc.lang)}
}

// T returns the web catalogue's text for key in the request's language.
func (rc *reqCtx) T(key string, args ...any) string {
	return i18n.T(rc.lang, "web."+key, args...)
}

type handler func(w http.ResponseWriter, r *http.Request, rc *reqCtx) error

type server struct {
	deps     Deps
	opts     Options
	log      *slog.Logger
	admin    UserAdmin // nil: no users page
	pages    map[string]*pageTemplate
	assets   map[string]asset
	sessions *sessionStore
	key      []byte // HMAC key of the pre-session CSRF token
	mux      *http.ServeMux
}

// New builds the page handler. It panics if an embedded template does not
// parse: that is a build error, caught by the package's tests.
func New(deps Deps, opts Options) http.Handler {
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	s := &server{deps: deps, opts: opts.withDefaults(), log: deps.Logger, mux: http.NewServeMux()}
	s.admin, _ = deps.Users.(UserAdmin)
	s.key = make([]byte, 32)
	if _, err := rand.Read(s.key); err != nil {
		panic("web: no randomness: " + err.Error())
	}
	s.sessions = newSessionStore(s.opts)
	s.pages = mustParsePages()
	s.assets = mustLoadAssets()
	s.routes()
	return http.NewCrossOriginProtection().Handler(s.mux)
}

func (s *server) routes() {
	type rt struct {
		pattern string
		access  access
		h       handler
	}
	table := []rt{
		{"GET /{$}", signedIn, s.home},
		{"GET /signin", public, s.signinForm},
		{"POST /signin", public, s.signin},
		{"POST /signout", public, s.signout},
		{"POST /lang", public, s.setLang},

		{"GET /accounts", adminOnly, s.accountList},
		{"GET /accounts/new", adminOnly, s.accountNew},
		{"POST /accounts", adminOnly, s.accountCreate},
		{"POST /accounts/check", adminOnly, s.accountCheck},
		{"GET /accounts/{id}", adminOnly, s.accountEdit},
		{"POST /accounts/{id}", adminOnly, s.accountUpdate},
		{"POST /accounts/{id}/delete", adminOnly, s.accountDelete},

		{"GET /mailboxes", signedIn, s.mailboxList},
		{"GET /mailboxes/new", signedIn, s.mailboxNew},
		{"POST /mailboxes", signedIn, s.mailboxConnect},
		{"GET /mailboxes/{id}", signedIn, s.mailboxSettings},
		{"POST /mailboxes/{id}", signedIn, s.mailboxUpdate},
		{"POST /mailboxes/{id}/outgoing", signedIn, s.mailboxOutgoing},
		{"POST /mailboxes/{id}/outgoing/check", signedIn, s.mailboxOutgoingCheck},
		{"POST /mailboxes/{id}/delete", signedIn, s.mailboxDelete},
		{"GET /mailboxes/{id}/folders", signedIn, s.folderList},
		{"POST /mailboxes/{id}/folders", signedIn, s.folderSave},
		{"GET /mailboxes/{id}/messages", signedIn, s.messageList},
		{"GET /mailboxes/{id}/messages/{mid}", signedIn, s.messageView},

		{"GET /senders", signedIn, s.senderList},
		{"GET /senders/smtp", signedIn, s.senderSMTPForm},
		{"POST /senders/smtp", signedIn, s.senderSMTPCreate},
		{"POST /senders/delete/{id}", signedIn, s.senderDelete},
		{"GET /senders/confirm", signedIn, s.confirmForm},
		{"POST /senders/confirm", signedIn, s.confirmStart},
		{"GET /senders/confirm/{id}", signedIn, s.confirmCodeForm},
		{"POST /senders/confirm/{id}", signedIn, s.confirmCode},

		{"GET /compose", signedIn, s.composeForm},
		{"POST /compose", signedIn, s.composeSend},

		{"GET /log", signedIn, s.sendLog},

		{"GET /users", adminOnly, s.userList},
		{"POST /users", adminOnly, s.userCreate},
		{"GET /users/{id}", adminOnly, s.userView},
		{"POST /users/{id}/tokens", adminOnly, s.tokenIssue},
		{"POST /users/{id}/tokens/{tid}/revoke", adminOnly, s.tokenRevoke},
	}
	for _, e := range table {
		s.mux.Handle(e.pattern, s.wrap(e.access, e.h))
	}
	s.mux.HandleFunc("GET /static/{name}", s.static)
	s.mux.Handle("/", s.wrap(public, s.notFound))
}

// maxFormBytes bounds a form body; the largest form (compose) holds a
// message text.
const maxFormBytes = 2 << 20

// wrap adds, around one page: the security headers, the language, the
// session and its user, the access check, the CSRF check on POST, and the
// error page.
func (s *server) wrap(need access, h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		securityHeaders(w)
		rc := &reqCtx{lang: s.language(r)}
		defer func() {
			if p := recover(); p != nil {
				s.log.ErrorContext(r.Context(), "panic in page", "path", r.URL.Path, "panic", p)
				s.renderError(w, r, rc, http.StatusInternalServerError, "error.internal")
			}
		}()
		if sess := s.sessions.get(sessionID(r)); sess != nil {
			u, err := s.deps.Users.Authenticate(r.Context(), sess.token.Reveal())
			switch {
			case err == nil:
				rc.sess, rc.user = sess, u
			case errors.Is(err, apperr.ErrUnauthenticated):
				s.sessions.delete(sess.id) // token revoked or user deleted
			default:
				s.fail(w, r, rc, err)
				return
			}
		}
		rc.csrf = s.csrfFor(w, r, rc)
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
			if err := r.ParseForm(); err != nil {
				s.renderError(w, r, rc, http.StatusBadRequest, "error.bad_form")
				return
			}
			if !s.csrfValid(r, rc) {
				s.renderError(w, r, rc, http.StatusForbidden, "error.csrf")
				return
			}
		}
		if need != public && rc.sess == nil {
			s.toSignin(w, r)
			return
		}
		if need == adminOnly && !rc.user.Admin {
			s.renderError(w, r, rc, http.StatusForbidden, "error.admin_only")
			return
		}
		if err := h(w, r, rc); err != nil {
			s.fail(w, r, rc, err)
		}
	})
}

func securityHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
}

// toSignin sends a visitor without a session to the sign-in page, with the
// page they wanted to come back to.
func (s *server) toSignin(w http.ResponseWriter, r *http.Request) {
	target := "/signin"
	if r.Method == http.MethodGet && r.URL.Path != "/" {
		target += "?next=" + urlQueryEscape(r.URL.RequestURI())
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
}

func (s *server) home(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
	http.Redirect(w, r, "/mailboxes", http.StatusSeeOther)
	return nil
}

func (s *server) notFound(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	s.renderError(w, r, rc, http.StatusNotFound, "error.not_found")
	return nil
}

// fail answers an error from a service: the kinds map to statuses and to
// a message in the page's language; anything else is internal and logged.
func (s *server) fail(w http.ResponseWriter, r *http.Request, rc *reqCtx, err error) {
	status, key := http.StatusInternalServerError, "error.internal"
	switch {
	case errors.Is(err, apperr.ErrNotFound):
		status, key = http.StatusNotFound, "error.not_found"
	case errors.Is(err, apperr.ErrForbidden):
		status, key = http.StatusForbidden, "error.forbidden"
	case errors.Is(err, apperr.ErrUnauthenticated):
		s.toSignin(w, r)
		return
	case errors.Is(err, apperr.ErrConflict), errors.Is(err, apperr.ErrInvalid), errors.Is(err, apperr.ErrUnprocessable):
		status, key = http.StatusConflict, "error.conflict"
		if errors.Is(err, apperr.ErrInvalid) {
			status = http.StatusBadRequest
		}
		if e, ok := apperr.As(err); ok {
			s.renderErrorText(w, r, rc, status, errorText(rc.lang, e))
			return
		}
	case errors.Is(err, apperr.ErrRateLimited):
		status, key = http.StatusTooManyRequests, "error.rate_limited"
	case errors.Is(err, apperr.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		status, key = http.StatusServiceUnavailable, "error.unavailable"
		s.log.WarnContext(r.Context(), "page failed", "path", r.URL.Path, "error", err)
	default:
		s.log.ErrorContext(r.Context(), "page failed", "path", r.URL.Path, "error", err)
	}
	s.renderError(w, r, rc, status, key)
}

// pathID parses a numeric path value; a bad one answers as missing.
func pathID(r *http.Request, name string) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue(name), 10, 64)
	if err != nil || id <= 0 {
		return 0, apperr.NotFound("object")
	}
	return id, nil
}

// redirect ends a successful POST (post, redirect, get), with a message
// for the next page.
func (s *server) redirect(w http.ResponseWriter, r *http.Request, rc *reqCtx, to, flashKey string, args ...any) error {
	if flashKey != "" && rc.sess != nil {
		s.sessions.flash(rc.sess.id, i18n.T(rc.lang, "web."+flashKey, args...))
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
	return nil
}
