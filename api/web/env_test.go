package web

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mailsync/mailsync/api"
	"github.com/mailsync/mailsync/internal/netguard"
	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/store/storetest"
	"github.com/mailsync/mailsync/internal/testpeer"
	"github.com/mailsync/mailsync/internal/users"
	"github.com/mailsync/mailsync/mailbox"
	"github.com/mailsync/mailsync/outgoing"
	imapsync "github.com/mailsync/mailsync/sync"
)

// Addresses and passwords of the test peers.
const (
	siteAddr = "site@example.com" // a system SMTP account
	sitePass = "Site-Pa55word"
	annAddr  = "ann@example.test" // a user's mailbox (IMAP and SMTP)
	annPass  = "Ann-Pa55word"
	ownAddr  = "crm@example.net" // an own-SMTP CRM sender
	ownPass  = "Crm-Pa55word"
)

// env is the real services over SQLite behind api.New with the pages, and
// in-process SMTP and IMAP peers over TLS from one CA.
type env struct {
	t          *testing.T
	db         *store.DB
	users      *users.Store
	out        *outgoing.Service
	mbs        *mailbox.Service
	sync       *imapsync.Engine // with envOptions.sync
	smtp       *testpeer.SMTPServer
	ca         *testpeer.CA
	srv        *httptest.Server
	adminToken string
	annToken   string
	annID      int64
}

type envOptions struct {
	messages api.Messages
	webOpts  Options
	tls      bool
	sync     bool // run the real sync engine's queries for the message pages
}

func newEnv(t *testing.T, o *envOptions) *env {
	t.Helper()
	if o == nil {
		o = &envOptions{}
	}
	db := storetest.Open(t, store.SQLite)
	keyText, _ := secret.GenerateKey()
	key, _ := secret.ParseKey(keyText)
	box := secret.NewBox(key)
	ca := testpeer.NewCA(t)
	dialer := &netguard.Dialer{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	out := outgoing.NewService(outgoing.Deps{DB: db, Box: box,
		Network: &outgoing.Network{Dialer: dialer, RootCAs: ca.Pool()}},
		outgoing.Config{CheckTimeout: 5 * time.Second, ConfirmationAccount: siteAddr})
	mbs := mailbox.NewService(mailbox.Deps{DB: db, Box: box, Outgoing: out,
		IMAP: &mailbox.IMAPNetwork{Dialer: dialer, RootCAs: ca.Pool()}}, mailbox.Config{CheckTimeout: 5 * time.Second})
	us := users.New(db)
	ctx := context.Background()
	_, adminTok, err := us.CreateWithToken(ctx, "admin@example.com", "Admin", true)
	if err != nil {
		t.Fatal(err)
	}
	ann, annTok, err := us.CreateWithToken(ctx, annAddr, "Ann", false)
	if err != nil {
		t.Fatal(err)
	}
	peer := testpeer.StartSMTP(t, &testpeer.SMTPOptions{Mode: testpeer.SMTPStartTLS, TLS: ca.ServerTLS(t),
		Users: map[string]string{siteAddr: sitePass, annAddr: annPass, ownAddr: ownPass}})
	var msgs api.Messages
	var engine *imapsync.Engine
	switch {
	case o.messages != nil:
		msgs = o.messages
	case o.sync:
		engine = imapsync.New(imapsync.Deps{DB: db, Mailboxes: mbs}, imapsync.Config{})
		msgs = engine
	}
	// Warnings and up printed; every record, at any level, checked for the
	// suite's passwords.
	log := slog.New(testpeer.CanaryHandler(t, slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}),
		nil, sitePass, annPass, ownPass))
	lookup := &mailbox.Lookup{Resolver: noMX{}}
	pages := New(Deps{Logger: log, Users: us, Outgoing: out, Mailboxes: mbs, Senders: out, Providers: lookup, Messages: msgs}, o.webOpts)
	a := api.New(api.Deps{Users: us, Ready: db, Outgoing: out, Mailboxes: mbs, Senders: out,
		ProviderLookup: lookup, Web: pages})
	var srv *httptest.Server
	if o.tls {
		srv = httptest.NewTLSServer(a.Handler())
	} else {
		srv = httptest.NewServer(a.Handler())
	}
	t.Cleanup(srv.Close)
	return &env{t: t, db: db, users: us, out: out, mbs: mbs, sync: engine, smtp: peer, ca: ca, srv: srv,
		adminToken: adminTok.Reveal(), annToken: annTok.Reveal(), annID: ann.ID}
}

// startIMAP starts an in-process IMAP server with ann's mailbox, on the
// env's CA.
func (e *env) startIMAP() *testpeer.IMAPServer {
	return testpeer.StartIMAP(e.t, &testpeer.IMAPOptions{CA: e.ca, User: annAddr, Password: annPass})
}

// send runs the outbox once: every due message is sent and logged when it
// returns.
func (e *env) send() {
	e.t.Helper()
	if _, err := e.out.NewWorker().ProcessDue(context.Background()); err != nil {
		e.t.Fatalf("ProcessDue() = %v", err)
	}
}

// client is a browser without JavaScript: a cookie jar, no automatic
// redirects, and the CSRF token of the last page it read.
type client struct {
	t    *testing.T
	e    *env
	hc   *http.Client
	csrf string
	lang string
	last string // body of the last response
}

func (e *env) client(lang string) *client {
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Transport: e.srv.Client().Transport, Jar: jar}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &client{t: e.t, e: e, hc: hc, lang: lang}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (c *client) do(req *http.Request) (*http.Response, string) {
	c.t.Helper()
	if c.lang != "" {
		req.Header.Set("Accept-Language", c.lang)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	c.last = string(b)
	if m := csrfRE.FindStringSubmatch(c.last); m != nil {
		c.csrf = m[1]
	}
	return resp, c.last
}

func (c *client) get(path string) (*http.Response, string) {
	c.t.Helper()
	req, _ := http.NewRequest("GET", c.e.srv.URL+path, nil)
	return c.do(req)
}

// post sends a form with the current CSRF token (unless the form has its
// own "csrf").
func (c *client) post(path string, form url.Values) (*http.Response, string) {
	c.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if _, ok := form["csrf"]; !ok {
		form.Set("csrf", c.csrf)
	}
	req, _ := http.NewRequest("POST", c.e.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return c.do(req)
}

// signIn signs in with a token and fails the test unless it worked.
func (c *client) signIn(token string) {
	c.t.Helper()
	c.get("/signin")
	resp, body := c.post("/signin", url.Values{"token": {token}})
	if resp.StatusCode != http.StatusSeeOther {
		c.t.Fatalf("sign in = %d %s", resp.StatusCode, body)
	}
}

// wantStatus fails unless the response has the status.
func wantStatus(t *testing.T, what string, resp *http.Response, body string, want int) {
	t.Helper()
	if resp.StatusCode != want {
		if len(body) > 3000 {
			body = body[:3000]
		}
		t.Fatalf("%s = %d, want %d; body:\n%s", what, resp.StatusCode, want, body)
	}
}

func wantContains(t *testing.T, what, body string, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(body, s) {
			if len(body) > 4000 {
				body = body[:4000]
			}
			t.Errorf("%s lacks %q; body:\n%s", what, s, body)
		}
	}
}

func wantLacks(t *testing.T, what, body string, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if strings.Contains(body, s) {
			t.Errorf("%s contains %q", what, s)
		}
	}
}

// testClock is a settable clock; its unit is whatever the test says.
type testClock struct{ t time.Time }

func (c *testClock) Now() time.Time {
	if c.t.IsZero() {
		c.t = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	}
	return c.t
}

func (c *testClock) add(d time.Duration) { c.t = c.Now().Add(d) }

func minutes(n int) time.Duration { return time.Duration(n) * time.Minute }

// testWriter sends the pages' log to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func secretOf(s string) secret.Secret { return secret.Secret(s) }

// noMX is a resolver that knows no MX records: no test asks the real DNS.
type noMX struct{}

func (noMX) LookupMX(context.Context, string) ([]*net.MX, error) {
	return nil, &net.DNSError{Err: "no such host", IsNotFound: true}
}
