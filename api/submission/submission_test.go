package submission_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/mail"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/mailsync/mailsync/api/submission"
	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/netguard"
	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/store/storetest"
	"github.com/mailsync/mailsync/internal/testpeer"
	"github.com/mailsync/mailsync/internal/users"
	"github.com/mailsync/mailsync/outgoing"
)

const (
	siteAddr    = "site@example.com" // system account shared with users, named "Example Site"
	sitePass    = "Site-Pa55word"
	privateAddr = "private@example.com" // system account not shared with users
	privatePass = "Private-Pa55word"
	siteName    = "Example Site"
	maxBytes    = 64 << 10
)

// env is one outgoing service on a fresh database, its upstream SMTP peer,
// two users with tokens, and a submission server on 127.0.0.1.
type env struct {
	db       *store.DB
	out      *outgoing.Service
	users    *users.Store
	ca       *testpeer.CA
	peer     *testpeer.SMTPServer
	srv      *submission.Server
	addr     string // SMTP with STARTTLS
	tlsAddr  string // implicit TLS
	annToken string // a user's token
	admToken string // the admin's token
	logs     *logBuffer
}

type envOptions struct {
	trustLoopback bool
	remote        bool // every client plays a remote (non-loopback) one
}

func newEnv(t *testing.T, db *store.DB, o envOptions) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{db: db, ca: testpeer.NewCA(t), logs: &logBuffer{}}
	e.peer = testpeer.StartSMTP(t, &testpeer.SMTPOptions{
		Mode: testpeer.SMTPStartTLS, TLS: e.ca.ServerTLS(t),
		Users: map[string]string{siteAddr: sitePass, privateAddr: privatePass},
	})
	keyText, _ := secret.GenerateKey()
	key, _ := secret.ParseKey(keyText)
	nw := &outgoing.Network{
		Dialer:    &netguard.Dialer{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}},
		RootCAs:   e.ca.Pool(),
		HelloName: "mailsync.test",
	}
	e.out = outgoing.NewService(outgoing.Deps{DB: db, Box: secret.NewBox(key), Network: nw},
		outgoing.Config{CheckTimeout: 10 * time.Second, MaxMessageBytes: maxBytes})
	e.users = users.New(db)
	_, adm, err := e.users.CreateWithToken(ctx, "admin@localhost", "Admin", true)
	if err != nil {
		t.Fatal(err)
	}
	ann, annTok, err := e.users.CreateWithToken(ctx, "ann@example.com", "Ann", false)
	if err != nil {
		t.Fatal(err)
	}
	_ = ann
	e.admToken, e.annToken = adm.Reveal(), annTok.Reveal()
	admin := outgoing.Caller{UserID: 1, Admin: true, Lang: "en"}
	for _, a := range []struct {
		email, pass, name string
		shared            bool
	}{{siteAddr, sitePass, siteName, true}, {privateAddr, privatePass, "", false}} {
		sec, auth, pw := outgoing.SecuritySTARTTLS, outgoing.AuthLogin, secret.Secret(a.pass)
		host, port := "localhost", e.peer.Port()
		if _, rep, err := e.out.CreateAccount(ctx, admin, outgoing.AccountInput{
			SenderName: &a.name, Email: &a.email, Host: &host, Port: &port, Security: &sec, Auth: &auth,
			Login: &a.email, Password: &pw, SharedWithUsers: &a.shared,
		}); err != nil {
			t.Fatalf("CreateAccount(%s) = %v; report %+v", a.email, err, rep)
		}
	}

	// The outbox worker sends what the submission server queues.
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = e.out.NewWorker().Run(wctx) }()
	t.Cleanup(func() { stop(); <-done })

	e.srv, err = submission.New(&submission.Options{
		Domain: "mailsync.test", TLS: e.ca.ServerTLS(t), TrustLoopback: o.trustLoopback,
		LoopbackUser: "admin@localhost", MaxMessageBytes: maxBytes,
	}, submission.Deps{Outgoing: e.out, Users: e.users,
		Logger: slog.New(testpeer.CanaryHandler(t, slog.NewTextHandler(e.logs, nil), []string{siteAddr, privateAddr}, sitePass, privatePass))})
	if err != nil {
		t.Fatal(err)
	}
	if o.remote {
		submission.SetLoopback(e.srv, func(net.Addr) bool { return false })
	}
	var wg sync.WaitGroup
	serve := func(implicit bool) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			var err error
			if implicit {
				err = e.srv.ServeTLS(context.WithoutCancel(ctx), ln)
			} else {
				err = e.srv.Serve(context.WithoutCancel(ctx), ln)
			}
			if !errors.Is(err, submission.ErrServerClosed) {
				t.Errorf("Serve() = %v, want ErrServerClosed", err)
			}
		})
		return ln.Addr().String()
	}
	e.addr, e.tlsAddr = serve(false), serve(true)
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := e.srv.Shutdown(sctx); err != nil {
			t.Errorf("Shutdown() = %v", err)
		}
		wg.Wait()
	})
	return e
}

// logBuffer collects the server's log.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// dial connects, says EHLO and, with tlsName set, upgrades with STARTTLS
// verified against the test CA.
func (e *env) dial(t *testing.T, starttls bool) *smtp.Client {
	t.Helper()
	var (
		c   *smtp.Client
		err error
	)
	if starttls {
		c, err = smtp.DialStartTLS(e.addr, e.ca.ClientTLS("localhost"))
	} else {
		c, err = smtp.Dial(e.addr)
	}
	if err != nil {
		t.Fatalf("dial %s: %v", e.addr, err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.test"); err != nil {
		t.Fatalf("EHLO: %v", err)
	}
	return c
}

// send runs one transaction and returns the final reply's text or error.
func send(c *smtp.Client, from string, to []string, msg string) (string, error) {
	if err := c.Mail(from, nil); err != nil {
		return "", err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return "", err
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	if _, err := io.WriteString(w, msg); err != nil {
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	return resp.StatusText, nil
}

func message(from, subject string, extra ...string) string {
	h := []string{"From: " + from, "To: Rcpt <rcpt@example.org>", "Subject: " + subject}
	h = append(h, extra...)
	return strings.Join(h, "\r\n") + "\r\n\r\nHällo from the site.\r\nLine two.\r\n"
}

var queuedRE = regexp.MustCompile(`queued as <([^>]+)>`)

func (e *env) waitMessages(t *testing.T, n int) []testpeer.SMTPMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	msgs, err := e.peer.WaitMessages(ctx, n)
	if err != nil {
		t.Fatalf("upstream: %v; log:\n%s", err, e.logs)
	}
	return msgs
}

func header(t *testing.T, data []byte) mail.Header {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("the upstream got an unreadable message: %v\n%s", err, data)
	}
	return m.Header
}

func smtpCode(err error) (int, smtp.EnhancedCode, string) {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code, se.EnhancedCode, se.Message
	}
	return 0, smtp.EnhancedCode{}, fmt.Sprint(err)
}

// A user who authenticated with a token over STARTTLS sends as a shared
// system account: the message is routed by its From, gets the account's
// name, keeps its Message-ID when it has one, loses its Bcc header and
// reaches every envelope recipient, Bcc included, through the account.
func TestSubmitAuthenticatedRoutedByFrom(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, envOptions{})
		for _, mech := range []string{sasl.Plain, sasl.Login} {
			t.Run(mech, func(t *testing.T) {
				before := len(e.peer.Messages())
				c := e.dial(t, true)
				if ok, params := c.Extension("AUTH"); !ok || params != "PLAIN LOGIN" {
					t.Errorf("AUTH after STARTTLS = %v %q, want PLAIN LOGIN", ok, params)
				}
				for _, ext := range []string{"PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"} {
					if ok, _ := c.Extension(ext); !ok {
						t.Errorf("EHLO lacks %s", ext)
					}
				}
				if size, ok := c.MaxMessageSize(); !ok || size != maxBytes {
					t.Errorf("SIZE = %d %v, want %d", size, ok, maxBytes)
				}
				var auth sasl.Client = sasl.NewPlainClient("", "ann@example.com", e.annToken)
				if mech == sasl.Login {
					auth = sasl.NewLoginClient("ann@example.com", e.annToken)
				}
				if err := c.Auth(auth); err != nil {
					t.Fatalf("AUTH %s with the token: %v", mech, err)
				}
				subject := "routed " + mech
				reply, err := send(c, "bounces@example.net", []string{"rcpt@example.org", "hidden@example.org"},
					message(siteAddr, subject, "Bcc: hidden@example.org", "Message-ID: <own."+mech+"@site.example>"))
				if err != nil {
					t.Fatalf("DATA: %v", err)
				}
				if m := queuedRE.FindStringSubmatch(reply); m == nil || m[1] != "own."+mech+"@site.example" {
					t.Errorf("250 text %q, want queued as <own.%s@site.example>", reply, mech)
				}
				msgs := e.waitMessages(t, before+1)
				got := msgs[len(msgs)-1]
				h := header(t, got.Data)
				if from := h.Get("From"); from != `"Example Site" <site@example.com>` {
					t.Errorf("upstream From = %q, want the account's name added", from)
				}
				if h.Get("Subject") != subject || h.Get("Message-Id") != "<own."+mech+"@site.example>" {
					t.Errorf("upstream Subject %q Message-ID %q", h.Get("Subject"), h.Get("Message-Id"))
				}
				if bytes.Contains(got.Data, []byte("Bcc:")) || bytes.Contains(got.Data, []byte("hidden@")) {
					t.Errorf("the Bcc header reached the recipients:\n%s", got.Data)
				}
				if h.Get("Date") == "" {
					t.Errorf("upstream message has no Date")
				}
				if !bytes.Contains(got.Data, []byte("Hällo from the site.\r\nLine two.\r\n")) {
					t.Errorf("the body changed on the way:\n%s", got.Data)
				}
				if got.From != siteAddr || got.AuthUser != siteAddr || !got.TLS ||
					strings.Join(got.To, ",") != "rcpt@example.org,hidden@example.org" {
					t.Errorf("upstream envelope MAIL %q RCPT %v as %q TLS %v; want the account, both recipients",
						got.From, got.To, got.AuthUser, got.TLS)
				}
				if !strings.Contains(e.logs.String(), "outbox_id=") || !strings.Contains(e.logs.String(), "message_id=own."+mech) {
					t.Errorf("the accepted message was not logged with outbox_id and message_id:\n%s", e.logs)
				}
				_ = c.Quit()
			})
		}
	})
}

// Every refusal has its reply: the sender by From (550 5.7.1 naming it), a
// message too large (552), a malformed one (554), a bad recipient (553), a
// wrong token (535), AUTH in clear text from afar (538) and the database
// being away (451 4.3.0).
func TestSubmitRefusals(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, envOptions{})
		c := e.dial(t, true)
		if err := c.Auth(sasl.NewPlainClient("", "ann", e.annToken)); err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			name     string
			from     string
			rcpts    []string
			msg      string
			code     int
			enhanced smtp.EnhancedCode
			text     string
		}{
			{"unroutable", "x@y.z", []string{"r@example.org"}, message("nobody@example.com", "x"), 550, smtp.EnhancedCode{5, 7, 1}, "nobody@example.com"},
			{"not shared", "", []string{"r@example.org"}, message("Me <"+privateAddr+">", "x"), 550, smtp.EnhancedCode{5, 7, 1}, privateAddr},
			{"too large", "", []string{"r@example.org"}, message(siteAddr, "x") + strings.Repeat("0123456789abcdef\r\n", maxBytes/16), 552, smtp.EnhancedCode{5, 3, 4}, ""},
			{"no From", "", []string{"r@example.org"}, "Subject: x\r\n\r\nbody\r\n", 554, smtp.EnhancedCode{5, 6, 0}, "From"},
			{"two From", "", []string{"r@example.org"}, "From: a@example.com\r\nFrom: " + siteAddr + "\r\n\r\nbody\r\n", 554, smtp.EnhancedCode{5, 6, 0}, "more than one From"},
			{"encoded line break", "", []string{"r@example.org"}, message("=?utf-8?q?Evil=0D=0ABcc:_x@evil.test?= <"+siteAddr+">", "x"), 554, smtp.EnhancedCode{5, 6, 0}, "from"},
			{"bad recipient", "", []string{"r@example,org"}, message(siteAddr, "x"), 553, smtp.EnhancedCode{5, 1, 3}, "r@example,org"},
		}
		for _, tc := range cases {
			_, err := send(c, tc.from, tc.rcpts, tc.msg)
			code, enh, text := smtpCode(err)
			if code != tc.code || enh != tc.enhanced || !strings.Contains(text, tc.text) {
				t.Errorf("%s: reply %d %v %q, want %d %v naming %q", tc.name, code, enh, text, tc.code, tc.enhanced, tc.text)
			}
			_ = c.Reset()
		}
		// SIZE announced over the limit is refused at MAIL.
		err := c.Mail(siteAddr, &smtp.MailOptions{Size: maxBytes + 1})
		if code, _, _ := smtpCode(err); code != 552 {
			t.Errorf("MAIL SIZE=%d = %v, want 552", maxBytes+1, err)
		}
		_ = c.Reset()

		bad := e.dial(t, true)
		if code, enh, _ := smtpCode(bad.Auth(sasl.NewPlainClient("", "ann", "mst_wrong"))); code != 535 || enh != (smtp.EnhancedCode{5, 7, 8}) {
			t.Errorf("AUTH with a wrong token = %d %v, want 535 5.7.8", code, enh)
		}
		if code, _, _ := smtpCode(bad.Mail(siteAddr, nil)); code != 530 {
			t.Errorf("MAIL without AUTH = %d, want 530", code)
		}

		// The database goes away after AUTH: 451 4.3.0, so the client keeps
		// the message and tries again.
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		_, err = send(c, "", []string{"r@example.org"}, message(siteAddr, "db down"))
		if code, enh, _ := smtpCode(err); code != 451 || enh != (smtp.EnhancedCode{4, 3, 0}) {
			t.Errorf("with the database closed: %v, want 451 4.3.0", err)
		}
		if n := len(e.peer.Messages()); n != 0 {
			t.Errorf("the upstream got %d messages from refused submissions", n)
		}
	})
}

// A client on another host sees no AUTH before STARTTLS, is refused AUTH in
// clear text with 538 and MAIL without AUTH with 530, also when loopback
// clients are trusted.
func TestSubmitRemoteNeedsTLSAndAuth(t *testing.T) {
	e := newEnv(t, storetest.Open(t, store.SQLite), envOptions{trustLoopback: true, remote: true})
	c := e.dial(t, false)
	if ok, _ := c.Extension("STARTTLS"); !ok {
		t.Errorf("EHLO lacks STARTTLS")
	}
	if ok, params := c.Extension("AUTH"); ok {
		t.Errorf("AUTH %q offered in clear text to a remote client", params)
	}
	if code, enh, _ := smtpCode(c.Auth(sasl.NewPlainClient("", "ann", e.annToken))); code != 538 || enh != (smtp.EnhancedCode{5, 7, 11}) {
		t.Errorf("AUTH in clear text = %d %v, want 538 5.7.11", code, enh)
	}
	if code, _, _ := smtpCode(c.Mail(siteAddr, nil)); code != 530 {
		t.Errorf("MAIL without AUTH from a remote client = %d, want 530", code)
	}

	// Implicit TLS: AUTH offered at once.
	tc, err := smtp.DialTLS(e.tlsAddr, e.ca.ClientTLS("localhost"))
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if err := tc.Auth(sasl.NewLoginClient("ann@example.com", e.annToken)); err != nil {
		t.Fatalf("AUTH LOGIN over implicit TLS: %v", err)
	}
	if _, err := send(tc, siteAddr, []string{"r@example.org"}, message(siteAddr, "implicit tls")); err != nil {
		t.Fatalf("send over implicit TLS: %v", err)
	}
	if got := e.waitMessages(t, 1)[0]; header(t, got.Data).Get("Subject") != "implicit tls" {
		t.Errorf("upstream got %q", got.Data)
	}
}

// With TrustLoopback a local client sends without AUTH, as the loopback
// user (the admin, who may use an account not shared with users); without
// it, the same client is refused with 530.
func TestSubmitTrustedLoopback(t *testing.T) {
	e := newEnv(t, storetest.Open(t, store.SQLite), envOptions{trustLoopback: true})
	c := e.dial(t, false)
	if _, err := send(c, "", []string{"r@example.org"}, message(privateAddr, "trusted")); err != nil {
		t.Fatalf("send without AUTH from loopback: %v", err)
	}
	got := e.waitMessages(t, 1)[0]
	if h := header(t, got.Data); h.Get("From") != privateAddr || got.AuthUser != privateAddr {
		t.Errorf("upstream From %q via %q, want the private account's, unchanged (it has no name)", h.Get("From"), got.AuthUser)
	}

	strict := newEnv(t, storetest.Open(t, store.SQLite), envOptions{})
	c = strict.dial(t, false)
	if code, _, _ := smtpCode(c.Mail(siteAddr, nil)); code != 530 {
		t.Errorf("MAIL without AUTH and without TrustLoopback = %d, want 530", code)
	}
}

// Shutdown lets a transaction in progress finish with its 250, answers
// 421 to a new one and refuses new connections.
func TestSubmitShutdownFinishesTransaction(t *testing.T) {
	e := newEnv(t, storetest.Open(t, store.SQLite), envOptions{trustLoopback: true})
	inTx := e.dial(t, false)
	idle := e.dial(t, false)
	if err := inTx.Mail(siteAddr, nil); err != nil {
		t.Fatal(err)
	}
	if err := inTx.Rcpt("r@example.org", nil); err != nil {
		t.Fatal(err)
	}
	closing := make(chan struct{})
	submission.OnClosing(e.srv, func() { close(closing) })
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		shut <- e.srv.Shutdown(ctx)
	}()
	<-closing
	if code, enh, _ := smtpCode(idle.Mail(siteAddr, nil)); code != 421 || enh != (smtp.EnhancedCode{4, 3, 2}) {
		t.Errorf("MAIL during shutdown = %d %v, want 421 4.3.2", code, enh)
	}
	if c, err := net.Dial("tcp", e.addr); err == nil {
		c.Close()
		t.Errorf("a connection was accepted during shutdown")
	}
	w, err := inTx.Data()
	if err != nil {
		t.Fatalf("DATA during shutdown: %v", err)
	}
	io.WriteString(w, message(siteAddr, "finished during shutdown"))
	if _, err := w.CloseWithResponse(); err != nil {
		t.Fatalf("the transaction in progress got %v, want 250", err)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown() = %v", err)
	}
	if got := e.waitMessages(t, 1)[0]; header(t, got.Data).Get("Subject") != "finished during shutdown" {
		t.Errorf("upstream got %q", got.Data)
	}
}

// A transaction that does not finish holds Shutdown only until its context
// ends; the connection is then cut.
func TestSubmitShutdownDeadline(t *testing.T) {
	e := newEnv(t, storetest.Open(t, store.SQLite), envOptions{trustLoopback: true})
	c := e.dial(t, false)
	if err := c.Mail(siteAddr, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	submission.OnClosing(e.srv, cancel) // the deadline passes as soon as Shutdown waits
	if err := e.srv.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown() with a transaction left open = %v, want context.Canceled", err)
	}
	if err := c.Rcpt("r@example.org", nil); err == nil {
		t.Errorf("the connection survived Shutdown")
	}
}

// SubmitRaw stores the message as received except where it must change it.
func TestSubmitRawStoredMessage(t *testing.T) {
	e := newEnv(t, storetest.Open(t, store.SQLite), envOptions{})
	ann := outgoing.Caller{UserID: 2, Lang: "en"}
	cases := []struct {
		name     string
		envFrom  string
		raw      string
		want     []string // substrings of the stored message
		wantNot  []string
		idPrefix string
	}{
		{name: "bare LF and an mbox postmark", raw: "From site@example.com Mon Jan  5 10:00:00 2026\nFrom: " + siteAddr + "\nSubject: lf\n\nline\nline\n",
			want:    []string{"From: \"Example Site\" <site@example.com>\r\n", "Subject: lf\r\n", "\r\n\r\nline\r\nline\r\n", "Message-ID: <", "Date: "},
			wantNot: []string{"Mon Jan", "\r\r"}},
		{name: "own name kept", raw: "From: Sales <" + siteAddr + ">\r\nSubject: x\r\n\r\nb\r\n",
			want: []string{"From: Sales <site@example.com>\r\n"}},
		{name: "folded From", raw: "From: \r\n site@example.com\r\nSubject: x\r\n\r\nb",
			want: []string{"From: \"Example Site\" <site@example.com>\r\n", "\r\n\r\nb\r\n"}},
		{name: "no From: the envelope sender", envFrom: siteAddr, raw: "Subject: x\r\n\r\nb\r\n",
			want: []string{"From: \"Example Site\" <site@example.com>\r\n"}},
		{name: "Bcc removed, folded", raw: "From: " + siteAddr + "\r\nBcc: a@example.org,\r\n b@example.org\r\nTo: t@example.org\r\n\r\nb\r\n",
			want: []string{"To: t@example.org\r\n"}, wantNot: []string{"Bcc", "a@example.org", "b@example.org"}},
		{name: "own Message-ID and Date kept", raw: "From: " + siteAddr + "\r\nDate: Mon, 5 Jan 2026 10:00:00 +0000\r\nMessage-ID: <abc@site.example>\r\n\r\nb\r\n",
			want: []string{"Date: Mon, 5 Jan 2026 10:00:00 +0000\r\n", "Message-ID: <abc@site.example>\r\n"}, idPrefix: "abc@site.example"},
	}
	for _, tc := range cases {
		m, err := e.out.SubmitRaw(context.Background(), ann, tc.envFrom, []string{"r@example.org"}, strings.NewReader(tc.raw), outgoing.SubmitOptions{})
		if err != nil {
			t.Errorf("%s: SubmitRaw() = %v", tc.name, err)
			continue
		}
		raw := string(m.Raw)
		for _, w := range tc.want {
			if !strings.Contains(raw, w) {
				t.Errorf("%s: stored message lacks %q:\n%s", tc.name, w, raw)
			}
		}
		for _, w := range tc.wantNot {
			if strings.Contains(raw, w) {
				t.Errorf("%s: stored message has %q:\n%s", tc.name, w, raw)
			}
		}
		if strings.Count(raw, "Message-ID:") != 1 || strings.Count(raw, "Date:") != 1 {
			t.Errorf("%s: want one Message-ID and one Date:\n%s", tc.name, raw)
		}
		if tc.idPrefix != "" && m.MessageID != tc.idPrefix {
			t.Errorf("%s: MessageID = %q, want %q", tc.name, m.MessageID, tc.idPrefix)
		}
		if bytes.Contains(bytes.ReplaceAll(m.Raw, []byte("\r\n"), nil), []byte("\n")) {
			t.Errorf("%s: a bare LF is left:\n%q", tc.name, raw)
		}
	}

	// A non-ASCII sender name is Q-encoded in the rewritten From only.
	name := "Сайт Пример"
	id := outgoing.Caller{UserID: 1, Admin: true, Lang: "en"}
	if _, _, err := e.out.UpdateAccount(context.Background(), id, 1, outgoing.AccountInput{SenderName: &name}); err != nil {
		t.Fatalf("UpdateAccount() = %v", err)
	}
	m, err := e.out.SubmitRaw(context.Background(), ann, "", []string{"r@example.org"},
		strings.NewReader("From: "+siteAddr+"\r\nSubject: =?utf-8?q?Pr=C3=BCfung?=\r\n\r\nb\r\n"), outgoing.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h := header(t, m.Raw)
	if a, err := mail.ParseAddress(h.Get("From")); err != nil || a.Name != name || !strings.HasPrefix(h.Get("From"), "=?utf-8?q?") {
		t.Errorf("From = %q (%v), want the Q-encoded name %q", h.Get("From"), err, name)
	}
	if m.Subject != "Prüfung" {
		t.Errorf("outbox Subject = %q, want the decoded Prüfung", m.Subject)
	}

	refused := []struct {
		name, raw, field string
		rcpts            []string
	}{
		{"NUL", "From: " + siteAddr + "\r\n\r\na\x00b\r\n", "message", nil},
		{"not a header", "From: " + siteAddr + "\r\nthis is body\r\n", "message", nil},
		{"no header", "\r\nbody\r\n", "message", nil},
		{"no recipients", "From: " + siteAddr + "\r\n\r\nb\r\n", "rcpt", []string{}},
		{"bad Message-ID", "From: " + siteAddr + "\r\nMessage-ID: nonsense\r\n\r\nb\r\n", "message_id", nil},
		{"two addresses", "From: " + siteAddr + ", other@example.com\r\n\r\nb\r\n", "from", nil},
	}
	for _, tc := range refused {
		rcpts := tc.rcpts
		if rcpts == nil {
			rcpts = []string{"r@example.org"}
		}
		_, err := e.out.SubmitRaw(context.Background(), ann, "", rcpts, strings.NewReader(tc.raw), outgoing.SubmitOptions{})
		ae, ok := apperr.As(err)
		if !ok || !errors.Is(err, apperr.ErrInvalid) || ae.Field != tc.field {
			t.Errorf("%s: SubmitRaw() = %v, want invalid %s", tc.name, err, tc.field)
		}
	}
}

// swaks, a real client, delivers through the submission port: in clear
// text from a trusted loopback client, and with STARTTLS (verified) and
// AUTH with a token, pipelining.
func TestSubmitSwaks(t *testing.T) {
	swaks, err := exec.LookPath("swaks")
	if err != nil {
		testpeer.Missing(t, "swaks", "the swaks command (Debian package swaks) is not installed")
	}
	e := newEnv(t, storetest.Open(t, store.SQLite), envOptions{trustLoopback: true})
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, e.ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(e.addr)
	runs := []struct {
		name string
		args []string
		from string
	}{
		{"plain trusted loopback", nil, privateAddr},
		{"starttls auth pipelining", []string{"--tls", "--tls-verify", "--tls-ca-path", caFile, "--tls-sni", "localhost",
			"--auth", "PLAIN", "--auth-user", "ann@example.com", "--auth-password", e.annToken, "--pipeline"}, siteAddr},
	}
	for i, r := range runs {
		args := append([]string{"--server", host, "--port", port, "--ehlo", "client.test", "--from", r.from,
			"--to", "rcpt@example.org", "--header", "Subject: swaks " + r.name, "--body", "sent by swaks"}, r.args...)
		out, err := exec.Command(swaks, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("swaks %s: %v\n%s\nlog:\n%s", r.name, err, out, e.logs)
		}
		if !queuedRE.Match(out) {
			t.Errorf("swaks %s: no 250 queued reply in\n%s", r.name, out)
		}
		got := e.waitMessages(t, i+1)[i]
		h := header(t, got.Data)
		wantFrom := r.from
		if r.from == siteAddr {
			wantFrom = `"Example Site" <site@example.com>`
		}
		if h.Get("Subject") != "swaks "+r.name || h.Get("From") != wantFrom || got.AuthUser != r.from {
			t.Errorf("swaks %s: upstream From %q Subject %q via %q, want From %s via %s",
				r.name, h.Get("From"), h.Get("Subject"), got.AuthUser, wantFrom, r.from)
		}
	}
}
