package web

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/i18n"
	"github.com/mailsync/mailsync/internal/secret"
)

// Cookie names.
const (
	sessionCookie    = "mailsync_session"
	presessionCookie = "mailsync_pre"
	langCookie       = "mailsync_lang"
)

// session is one signed-in browser. Its fields other than flashes never
// change after creation; flashes and seen change under the store's lock.
type session struct {
	id      string
	csrf    string
	token   secret.Secret // what Authenticate is asked again on each request
	userID  int64
	created time.Time
	seen    time.Time
	flashes []string
}

// sessionStore keeps sessions in memory: they do not survive a restart.
type sessionStore struct {
	mu   sync.Mutex
	m    map[string]*session
	opts Options
}

func newSessionStore(opts Options) *sessionStore {
	return &sessionStore{m: map[string]*session{}, opts: opts}
}

func randomToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("web: no randomness: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// create opens a session for a user signed in with token.
func (st *sessionStore) create(userID int64, token secret.Secret) *session {
	now := st.opts.Now()
	sess := &session{id: randomToken(), csrf: randomToken(), token: token, userID: userID, created: now, seen: now}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.pruneLocked(now)
	if len(st.m) >= st.opts.MaxSessions {
		var oldest *session
		for _, s := range st.m {
			if oldest == nil || s.seen.Before(oldest.seen) {
				oldest = s
			}
		}
		delete(st.m, oldest.id)
	}
	st.m[sess.id] = sess
	return sess
}

// get returns a live session and marks it used; nil for an unknown or
// expired id.
func (st *sessionStore) get(id string) *session {
	if id == "" {
		return nil
	}
	now := st.opts.Now()
	st.mu.Lock()
	defer st.mu.Unlock()
	s := st.m[id]
	if s == nil {
		return nil
	}
	if st.expired(s, now) {
		delete(st.m, id)
		return nil
	}
	s.seen = now
	return s
}

func (st *sessionStore) expired(s *session, now time.Time) bool {
	return now.Sub(s.seen) > st.opts.SessionIdle || now.Sub(s.created) > st.opts.SessionMaxAge
}

// pruneLocked drops expired sessions; called on sign-in, so its cost is
// paid only when the map grows.
func (st *sessionStore) pruneLocked(now time.Time) {
	for id, s := range st.m {
		if st.expired(s, now) {
			delete(st.m, id)
		}
	}
}

func (st *sessionStore) delete(id string) {
	st.mu.Lock()
	delete(st.m, id)
	st.mu.Unlock()
}

// flash queues a message for the session's next page.
func (st *sessionStore) flash(id, msg string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if s := st.m[id]; s != nil && len(s.flashes) < 5 {
		s.flashes = append(s.flashes, msg)
	}
}

// takeFlashes returns and clears the session's queued messages.
func (st *sessionStore) takeFlashes(id string) []string {
	st.mu.Lock()
	defer st.mu.Unlock()
	s := st.m[id]
	if s == nil {
		return nil
	}
	out := s.flashes
	s.flashes = nil
	return out
}

func sessionID(r *http.Request) string {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return ""
	}
	return c.Value
}

// cookie builds a cookie with the flags every mailsync cookie has:
// HttpOnly, SameSite=Strict, Path=/, Secure over TLS.
func (s *server) cookie(r *http.Request, name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name: name, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: s.opts.SecureCookies || r.TLS != nil,
	}
}

// csrfFor returns the token this page's forms carry: the session's, or
// before sign-in the signed pre-session value (the cookie is set here when
// missing).
func (s *server) csrfFor(w http.ResponseWriter, r *http.Request, rc *reqCtx) string {
	if rc.sess != nil {
		return rc.sess.csrf
	}
	if c, err := r.Cookie(presessionCookie); err == nil && len(c.Value) >= 32 {
		return s.signPresession(c.Value)
	}
	v := randomToken()
	http.SetCookie(w, s.cookie(r, presessionCookie, v, 0))
	// The request's own cookie jar gets it too, so a form rendered now and
	// a check later in this request agree.
	r.AddCookie(&http.Cookie{Name: presessionCookie, Value: v})
	return s.signPresession(v)
}

func (s *server) signPresession(v string) string {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte("mailsync web csrf\x00" + v))
	return "p." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// csrfValid checks a POST's token against the session's token and the
// pre-session token, in constant time.
func (s *server) csrfValid(r *http.Request, rc *reqCtx) bool {
	got := r.PostForm.Get("csrf")
	if got == "" {
		got = r.Header.Get("X-CSRF-Token")
	}
	if got == "" {
		return false
	}
	ok := false
	if rc.sess != nil && subtle.ConstantTimeCompare([]byte(got), []byte(rc.sess.csrf)) == 1 {
		ok = true
	}
	if c, err := r.Cookie(presessionCookie); err == nil && len(c.Value) >= 32 &&
		subtle.ConstantTimeCompare([]byte(got), []byte(s.signPresession(c.Value))) == 1 {
		ok = true
	}
	return ok
}

// language picks the page language: the switch's cookie, else
// Accept-Language.
func (s *server) language(r *http.Request) i18n.Lang {
	if c, err := r.Cookie(langCookie); err == nil {
		for _, l := range i18n.Supported() {
			if c.Value == string(l) {
				return l
			}
		}
	}
	return i18n.Parse(r.Header.Get("Accept-Language"))
}

// localPath returns p when it is a path on this site ("/…", not "//…"),
// else "/": redirects never leave the site.
func localPath(p string) string {
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.HasPrefix(p, "/\\") || strings.ContainsAny(p, "\r\n") {
		return "/"
	}
	return p
}

func urlQueryEscape(s string) string { return url.QueryEscape(s) }

// signinForm shows the sign-in page (or goes home when signed in).
func (s *server) signinForm(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	if rc.sess != nil {
		http.Redirect(w, r, localPath(r.URL.Query().Get("next")), http.StatusSeeOther)
		return nil
	}
	return s.render(w, r, rc, http.StatusOK, "signin", "signin.title", signinView{Next: localPath(r.URL.Query().Get("next"))})
}

type signinView struct {
	Next  string
	Error string
}

// signin opens a session for a valid API token. The session id is new at
// every sign-in, so a planted id is worthless.
func (s *server) signin(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	token := strings.TrimSpace(r.PostForm.Get("token"))
	next := localPath(r.PostForm.Get("next"))
	u, err := s.deps.Users.Authenticate(r.Context(), token)
	if err != nil {
		if e, ok := apperr.As(err); ok && e.Kind == apperr.ErrUnauthenticated {
			return s.render(w, r, rc, http.StatusUnauthorized, "signin", "signin.title",
				signinView{Next: next, Error: i18n.T(rc.lang, "web.signin.invalid")})
		}
		return err
	}
	if rc.sess != nil {
		s.sessions.delete(rc.sess.id)
	}
	sess := s.sessions.create(u.ID, secret.Secret(token))
	http.SetCookie(w, s.cookie(r, sessionCookie, sess.id, 0))
	http.Redirect(w, r, next, http.StatusSeeOther)
	return nil
}

// signout ends the session and clears its cookie.
func (s *server) signout(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	if rc.sess != nil {
		s.sessions.delete(rc.sess.id)
	}
	http.SetCookie(w, s.cookie(r, sessionCookie, "", -1))
	http.Redirect(w, r, "/signin", http.StatusSeeOther)
	return nil
}

// setLang stores the chosen language in a cookie for a year and goes back.
func (s *server) setLang(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
	lang := i18n.Parse(r.PostForm.Get("lang"))
	http.SetCookie(w, s.cookie(r, langCookie, string(lang), 365*24*3600))
	http.Redirect(w, r, localPath(r.PostForm.Get("back")), http.StatusSeeOther)
	return nil
}
