package outgoing_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/mail"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/netguard"
	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/store/storetest"
	"github.com/mailsync/mailsync/internal/testpeer"
	"github.com/mailsync/mailsync/outgoing"
)

const (
	siteAddr = "site@example.com"
	sitePass = "Site-Pa55word"
)

var admin = outgoing.Caller{UserID: 1, Admin: true, Lang: "en"}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type env struct {
	db    *store.DB
	box   *secret.Box
	svc   *outgoing.Service
	w     *outgoing.Worker
	clock *fakeClock
	ca    *testpeer.CA
}

func newEnv(t *testing.T, db *store.DB, cfg outgoing.Config) *env {
	t.Helper()
	ca := testpeer.NewCA(t)
	keyText, _ := secret.GenerateKey()
	key, _ := secret.ParseKey(keyText)
	box := secret.NewBox(key)
	clock := &fakeClock{now: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)}
	nw := &outgoing.Network{
		Dialer:    &netguard.Dialer{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}},
		RootCAs:   ca.Pool(),
		HelloName: "mailsync.test",
	}
	if cfg.CheckTimeout == 0 {
		cfg.CheckTimeout = 5 * time.Second
	}
	// The admin and a user exist, as the users table requires.
	for _, u := range []struct {
		id    int64
		email string
	}{{1, "admin@localhost"}, {2, "ann@example.com"}, {3, "bob@example.com"}} {
		if err := db.Gorm.Exec("INSERT INTO users (id, email, name, admin, created_at) VALUES (?, ?, '', ?, ?)",
			u.id, u.email, u.id == 1, time.Now()).Error; err != nil {
			t.Fatal(err)
		}
	}
	// Debug level, and a failure wherever a password shows in a record.
	log := slog.New(testpeer.CanaryHandler(t, slog.DiscardHandler, []string{siteAddr, scUser}, sitePass, scPass, hostilePass))
	nw.Logger = log
	svc := outgoing.NewService(outgoing.Deps{DB: db, Box: box, Network: nw, Clock: clock, Logger: log}, cfg)
	return &env{db: db, box: box, svc: svc, w: svc.NewWorker(), clock: clock, ca: ca}
}

func (e *env) peer(t *testing.T, mode testpeer.SMTPMode, script *testpeer.SMTPScript) *testpeer.SMTPServer {
	t.Helper()
	return testpeer.StartSMTP(t, &testpeer.SMTPOptions{
		Mode: mode, TLS: e.ca.ServerTLS(t), Users: map[string]string{siteAddr: sitePass}, Script: script,
	})
}

func ptr[T any](v T) *T { return &v }

func accountInput(p *testpeer.SMTPServer, sec outgoing.Security, name string) outgoing.AccountInput {
	pw := secret.Secret(sitePass)
	return outgoing.AccountInput{
		SenderName: ptr(name), Email: ptr(siteAddr), Host: ptr("localhost"), Port: ptr(p.Port()),
		Security: &sec, Auth: ptr(outgoing.AuthLogin), Login: ptr(siteAddr), Password: &pw,
	}
}

func (e *env) account(t *testing.T, p *testpeer.SMTPServer, sec outgoing.Security, name string) outgoing.Account {
	t.Helper()
	a, rep, err := e.svc.CreateAccount(context.Background(), admin, accountInput(p, sec, name))
	if err != nil {
		t.Fatalf("CreateAccount() = %v; report %+v", err, rep)
	}
	return a
}

func (e *env) submit(t *testing.T, c outgoing.Caller, d outgoing.Draft) outgoing.OutboxMessage {
	t.Helper()
	m, err := e.svc.Submit(context.Background(), c, d, outgoing.SubmitOptions{})
	if err != nil {
		t.Fatalf("Submit() = %v", err)
	}
	return m
}

func (e *env) process(t *testing.T) {
	t.Helper()
	if _, err := e.w.ProcessDue(context.Background()); err != nil {
		t.Fatalf("ProcessDue() = %v", err)
	}
}

func (e *env) status(t *testing.T, id int64) outgoing.OutboxMessage {
	t.Helper()
	m, err := e.svc.GetMessage(context.Background(), admin, id)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func draft(from string, to ...string) outgoing.Draft {
	return outgoing.Draft{From: from, To: to, Subject: "Hello", Text: "line one\nline two\n"}
}

func TestSendOverEachSecurity(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		for _, c := range []struct {
			mode testpeer.SMTPMode
			sec  outgoing.Security
			tls  bool
		}{
			{testpeer.SMTPImplicitTLS, outgoing.SecuritySSL, true},
			{testpeer.SMTPStartTLS, outgoing.SecuritySTARTTLS, true},
			{testpeer.SMTPPlain, outgoing.SecurityNone, false},
		} {
			t.Run(string(c.sec), func(t *testing.T) {
				e := newEnv(t, storetest.Open(t, db.Dialect), outgoing.Config{})
				p := e.peer(t, c.mode, nil)
				e.account(t, p, c.sec, "Portal")
				m := e.submit(t, admin, draft(siteAddr, "client@example.org"))
				e.process(t)
				got := e.status(t, m.ID)
				if got.Status != outgoing.StatusSent {
					t.Fatalf("status = %q (%s), want sent", got.Status, got.LastError)
				}
				msgs := p.Messages()
				if len(msgs) != 1 || msgs[0].TLS != c.tls || msgs[0].AuthUser != siteAddr {
					t.Fatalf("peer received %+v, want one message with TLS=%v", msgs, c.tls)
				}
				if !bytes.Contains(msgs[0].Data, []byte("Message-Id: <"+m.MessageID+">")) &&
					!bytes.Contains(msgs[0].Data, []byte("Message-ID: <"+m.MessageID+">")) {
					t.Errorf("received message lacks its Message-ID %s:\n%s", m.MessageID, msgs[0].Data)
				}
				if bytes.Contains(bytes.ReplaceAll(msgs[0].Data, []byte("\r\n"), nil), []byte("\n")) {
					t.Errorf("the received message has bare LF line endings")
				}
			})
		}
	})
}

// The sender name is put into From only when the message has none.
func TestSenderNameFallback(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			e := newEnv(t, storetest.Open(t, d), outgoing.Config{})
			p := e.peer(t, testpeer.SMTPStartTLS, nil)
			e.account(t, p, outgoing.SecuritySTARTTLS, "Portal Robot")
			e.submit(t, admin, draft(siteAddr, "a@example.org"))
			e.submit(t, admin, draft("Shop Desk <"+siteAddr+">", "b@example.org"))
			e.process(t)
			msgs := p.Messages()
			if len(msgs) != 2 {
				t.Fatalf("peer received %d messages, want 2", len(msgs))
			}
			want := map[string]string{"a@example.org": "Portal Robot", "b@example.org": "Shop Desk"}
			for _, m := range msgs {
				parsed, err := mail.ReadMessage(bytes.NewReader(m.Data))
				if err != nil {
					t.Fatal(err)
				}
				from, err := mail.ParseAddress(parsed.Header.Get("From"))
				if err != nil {
					t.Fatal(err)
				}
				if from.Name != want[m.To[0]] || from.Address != siteAddr {
					t.Errorf("message to %s arrived From %q <%s>, want name %q", m.To[0], from.Name, from.Address, want[m.To[0]])
				}
			}
		})
	}
}

func TestRetryThenSent(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			e := newEnv(t, storetest.Open(t, d), outgoing.Config{})
			p := e.peer(t, testpeer.SMTPStartTLS, &testpeer.SMTPScript{
				Data: func(n int, _ []byte) error {
					if n == 1 {
						return testpeer.SMTPReply(451, "4.3.0", "Try again later")
					}
					return nil
				},
			})
			e.account(t, p, outgoing.SecuritySTARTTLS, "")
			m := e.submit(t, admin, draft(siteAddr, "c@example.org"))
			e.process(t)
			got := e.status(t, m.ID)
			if got.Status != outgoing.StatusQueued || got.LastCode != 451 || got.LastStep != "data" || got.NextAttemptAt == nil {
				t.Fatalf("after a 451: status %q step %q code %d, want queued at data with 451", got.Status, got.LastStep, got.LastCode)
			}
			// Not due yet: nothing happens.
			e.process(t)
			if n := len(p.Messages()); n != 0 {
				t.Fatalf("the retry ran before its time")
			}
			e.clock.Advance(got.NextAttemptAt.Sub(e.clock.Now()) + time.Second)
			e.process(t)
			got = e.status(t, m.ID)
			if got.Status != outgoing.StatusSent || got.Attempts != 2 {
				t.Fatalf("after the retry: status %q attempts %d, want sent after 2", got.Status, got.Attempts)
			}
			if n := len(p.Messages()); n != 1 {
				t.Errorf("peer received %d messages, want 1", n)
			}
			entries, _, err := e.svc.ListLog(context.Background(), admin, outgoing.LogFilter{})
			if err != nil || len(entries) != 2 || entries[0].Status != "sent" || entries[1].Status != "retry" || entries[1].Code != 451 {
				t.Errorf("send log = %+v, want retry(451) then sent", entries)
			}
		})
	}
}

func TestLostReplyAfterDataIsUnknownThenResent(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			e := newEnv(t, storetest.Open(t, d), outgoing.Config{})
			p := e.peer(t, testpeer.SMTPStartTLS, &testpeer.SMTPScript{
				DropAfterData: func(n int) bool { return n == 1 },
			})
			e.account(t, p, outgoing.SecuritySTARTTLS, "")
			m := e.submit(t, admin, draft(siteAddr, "d@example.org"))
			e.process(t)
			got := e.status(t, m.ID)
			if got.Status != outgoing.StatusUnknown || got.UnknownCount != 1 || got.NextAttemptAt == nil {
				t.Fatalf("after a lost reply: status %q unknown_count %d, want unknown with a retry scheduled", got.Status, got.UnknownCount)
			}
			e.clock.Advance(2 * time.Hour)
			e.process(t)
			got = e.status(t, m.ID)
			msgs := p.Messages()
			if got.Status != outgoing.StatusSent || len(msgs) != 1 || !bytes.Contains(msgs[0].Data, []byte(m.MessageID)) {
				t.Fatalf("after the resend: status %q, peer has %d messages; want sent with the same Message-ID", got.Status, len(msgs))
			}
		})
	}
}

func TestRcptRefusedFails(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			e := newEnv(t, storetest.Open(t, d), outgoing.Config{})
			p := e.peer(t, testpeer.SMTPStartTLS, &testpeer.SMTPScript{
				Rcpt: func(_ int, to string) error {
					if to == "nobody@example.org" {
						return testpeer.SMTPReply(550, "5.1.1", "Mailbox unavailable")
					}
					return nil
				},
			})
			e.account(t, p, outgoing.SecuritySTARTTLS, "")
			m := e.submit(t, admin, draft(siteAddr, "nobody@example.org"))
			e.process(t)
			got := e.status(t, m.ID)
			if got.Status != outgoing.StatusFailed || got.LastStep != "rcpt" || got.LastCode != 550 || !strings.Contains(got.LastReply, "Mailbox unavailable") {
				t.Fatalf("status %q step %q code %d reply %q, want failed at rcpt with 550", got.Status, got.LastStep, got.LastCode, got.LastReply)
			}
			if len(p.Messages()) != 0 {
				t.Errorf("the peer received a message")
			}
		})
	}
}

// An inactive account is never used: its address routes nowhere, and a
// message queued before it was switched off fails unsent.
func TestInactiveAccountNeverUsed(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			e := newEnv(t, storetest.Open(t, d), outgoing.Config{})
			p := e.peer(t, testpeer.SMTPStartTLS, nil)
			a := e.account(t, p, outgoing.SecuritySTARTTLS, "")
			queued := e.submit(t, admin, draft(siteAddr, "e@example.org"))
			if _, _, err := e.svc.UpdateAccount(context.Background(), admin, a.ID, outgoing.AccountInput{Active: ptr(false)}); err != nil {
				t.Fatal(err)
			}
			_, err := e.svc.Submit(context.Background(), admin, draft(siteAddr, "f@example.org"), outgoing.SubmitOptions{})
			var ae *apperr.Error
			if !errors.As(err, &ae) || ae.Code != "no_sender_account" || !errors.Is(err, apperr.ErrUnprocessable) {
				t.Errorf("Submit() from an inactive account = %v, want 422 no_sender_account", err)
			}
			e.process(t)
			if got := e.status(t, queued.ID); got.Status != outgoing.StatusFailed {
				t.Errorf("a message queued for a now inactive account: status %q, want failed", got.Status)
			}
			if n := p.Conns(); n != 1 { // the check at creation only
				t.Errorf("peer saw %d connections, want only the creation check's", n)
			}
			if len(p.Messages()) != 0 {
				t.Errorf("an inactive account sent a message")
			}
		})
	}
}

// An account switched off by another instance routes nowhere here after at
// most five seconds (the route cache), and what was accepted for it in
// between is never sent through it.
func TestInactiveAccountOnAnotherInstance(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			e := newEnv(t, storetest.Open(t, d), outgoing.Config{})
			p := e.peer(t, testpeer.SMTPStartTLS, nil)
			a := e.account(t, p, outgoing.SecuritySTARTTLS, "")
			e.submit(t, admin, draft(siteAddr, "e@example.org")) // routes, and remembers the route
			other := outgoing.NewService(outgoing.Deps{DB: e.db, Box: e.box, Clock: e.clock,
				Network: &outgoing.Network{Dialer: &netguard.Dialer{}}}, outgoing.Config{})
			if _, _, err := other.UpdateAccount(context.Background(), admin, a.ID, outgoing.AccountInput{Active: ptr(false)}); err != nil {
				t.Fatal(err)
			}
			e.clock.Advance(5 * time.Second)
			_, err := e.svc.Submit(context.Background(), admin, draft(siteAddr, "f@example.org"), outgoing.SubmitOptions{})
			var ae *apperr.Error
			if !errors.As(err, &ae) || ae.Code != "no_sender_account" {
				t.Errorf("Submit() 5 s after another instance switched the account off = %v, want 422 no_sender_account", err)
			}
			e.process(t)
			if len(p.Messages()) != 0 {
				t.Errorf("an inactive account sent a message")
			}
		})
	}
}

func TestRoutingIsStrict(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			e := newEnv(t, storetest.Open(t, d), outgoing.Config{})
			p := e.peer(t, testpeer.SMTPStartTLS, nil)
			e.account(t, p, outgoing.SecuritySTARTTLS, "")
			user := outgoing.Caller{UserID: 2}
			cases := []struct {
				caller outgoing.Caller
				from   string
				kind   error
				code   string
			}{
				{admin, "other@example.com", apperr.ErrUnprocessable, "no_sender_account"},
				{admin, "SITE@Example.COM", nil, ""},
				{user, siteAddr, apperr.ErrForbidden, "sender_not_allowed"},
			}
			for _, c := range cases {
				_, err := e.svc.Submit(context.Background(), c.caller, draft(c.from, "g@example.org"), outgoing.SubmitOptions{})
				if c.kind == nil {
					if err != nil {
						t.Errorf("Submit(from %s) = %v, want accepted", c.from, err)
					}
					continue
				}
				var ae *apperr.Error
				if !errors.Is(err, c.kind) || !errors.As(err, &ae) || ae.Code != c.code {
					t.Errorf("Submit(from %s as user %d) = %v, want %s", c.from, c.caller.UserID, err, c.code)
				}
			}
		})
	}
}

// Header injection: every trick is refused at submit with 400 naming the
// field, and nothing reaches the peer.
func TestHeaderInjectionRefused(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			e := newEnv(t, storetest.Open(t, d), outgoing.Config{})
			p := e.peer(t, testpeer.SMTPStartTLS, nil)
			e.account(t, p, outgoing.SecuritySTARTTLS, "")
			cases := []struct {
				field string
				edit  func(d *outgoing.Draft)
			}{
				{"subject", func(d *outgoing.Draft) { d.Subject = "hi\r\nBcc: victim@example.org" }},
				{"subject", func(d *outgoing.Draft) { d.Subject = "hi\nBcc: victim@example.org" }},
				{"subject", func(d *outgoing.Draft) { d.Subject = "hi\rBcc: victim@example.org" }},
				{"subject", func(d *outgoing.Draft) { d.Subject = "hi\x00there" }},
				{"subject", func(d *outgoing.Draft) { d.Subject = "=?utf-8?q?hi=0D=0ABcc:_victim@example.org?=" }},
				{"subject", func(d *outgoing.Draft) { d.Subject = "=?utf-8?b?aGkNCkJjYzogdmljdGltQGV4YW1wbGUub3Jn?=" }},
				{"from", func(d *outgoing.Draft) { d.From = "Evil\r\nBcc: victim@example.org <" + siteAddr + ">" }},
				{"from", func(d *outgoing.Draft) { d.From = "=?utf-8?q?Evil=0ABcc:_v@example.org?= <" + siteAddr + ">" }},
				{"from", func(d *outgoing.Draft) { d.From = siteAddr + "\r\nBcc: victim@example.org" }},
				{"to[0]", func(d *outgoing.Draft) { d.To = []string{"a@example.org\r\nBcc: victim@example.org"} }},
				{"to[0]", func(d *outgoing.Draft) { d.To = []string{"a@example.org\nRCPT TO:<victim@example.org>"} }},
				{"to[0]", func(d *outgoing.Draft) { d.To = []string{"a@exa\x00mple.org"} }},
				{"cc[0]", func(d *outgoing.Draft) { d.Cc = []string{"\"x\r\ny\" <c@example.org>"} }},
				{"bcc[0]", func(d *outgoing.Draft) { d.Bcc = []string{"b@example.org>\r\nDATA"} }},
				{"reply_to", func(d *outgoing.Draft) { d.ReplyTo = "r@example.org\r\nX-Evil: 1" }},
				{"headers.X-Tag", func(d *outgoing.Draft) { d.Headers = map[string]string{"X-Tag": "a\r\nBcc: victim@example.org"} }},
				{"headers.X-Tag", func(d *outgoing.Draft) {
					d.Headers = map[string]string{"X-Tag": "=?utf-8?q?a=0D=0ABcc:_v@example.org?="}
				}},
				{"headers.X-Bad\r\nBcc", func(d *outgoing.Draft) { d.Headers = map[string]string{"X-Bad\r\nBcc": "v@example.org"} }},
				{"headers.Bcc", func(d *outgoing.Draft) { d.Headers = map[string]string{"Bcc": "v@example.org"} }},
				{"headers.Content-Type", func(d *outgoing.Draft) { d.Headers = map[string]string{"Content-Type": "text/html"} }},
				{"attachments[0].filename", func(d *outgoing.Draft) {
					d.Attachments = []outgoing.Attachment{{Filename: "a.txt\r\nBcc: v@example.org", Content: []byte("x")}}
				}},
				{"attachments[0].content_type", func(d *outgoing.Draft) {
					d.Attachments = []outgoing.Attachment{{Filename: "a.txt", ContentType: "text/plain\r\nBcc: v@example.org", Content: []byte("x")}}
				}},
				{"text", func(d *outgoing.Draft) { d.Text = "a\x00b" }},
			}
			for _, c := range cases {
				d := draft(siteAddr, "h@example.org")
				c.edit(&d)
				_, err := e.svc.Submit(context.Background(), admin, d, outgoing.SubmitOptions{})
				var ae *apperr.Error
				if !errors.Is(err, apperr.ErrInvalid) || !errors.As(err, &ae) || ae.Field != c.field {
					t.Errorf("Submit() with a trick in %s = %v, want 400 naming %s", c.field, err, c.field)
				}
			}
			e.process(t)
			if n := len(p.Messages()); n != 0 {
				t.Errorf("the peer received %d messages, want none", n)
			}
			for _, sess := range p.Sessions() {
				if bytes.Contains(sess.Transcript, []byte("victim")) {
					t.Errorf("an injected address reached the wire")
				}
			}
		})
	}
}

func TestConnectionReuseAndSendLogPaging(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			e := newEnv(t, storetest.Open(t, d), outgoing.Config{MaxConnsPerRoute: 1})
			p := e.peer(t, testpeer.SMTPStartTLS, nil)
			a := e.account(t, p, outgoing.SecuritySTARTTLS, "")
			for i := range 5 {
				e.submit(t, admin, draft(siteAddr, string(rune('a'+i))+"@example.org"))
			}
			e.process(t)
			if n := len(p.Messages()); n != 5 {
				t.Fatalf("peer received %d messages, want 5", n)
			}
			if n := p.Conns(); n != 2 { // the creation check, then one reused connection
				t.Errorf("peer saw %d connections, want 2 (check + one reused)", n)
			}
			var all []outgoing.LogEntry
			cursor := ""
			for {
				page, next, err := e.svc.ListLog(context.Background(), admin, outgoing.LogFilter{
					RouteKind: outgoing.KindSystem, RouteID: a.ID, Status: "sent", Limit: 2, Cursor: cursor})
				if err != nil {
					t.Fatal(err)
				}
				all = append(all, page...)
				if next == "" {
					break
				}
				cursor = next
			}
			if len(all) != 5 {
				t.Errorf("paging the log gave %d entries, want 5", len(all))
			}
			for i := 1; i < len(all); i++ {
				if all[i].ID >= all[i-1].ID {
					t.Errorf("log not newest first: %d after %d", all[i].ID, all[i-1].ID)
				}
			}
			// A user sees only their own entries.
			if mine, _, _ := e.svc.ListLog(context.Background(), outgoing.Caller{UserID: 2}, outgoing.LogFilter{}); len(mine) != 0 {
				t.Errorf("a user sees %d entries of the admin's", len(mine))
			}
		})
	}
}

// Over its daily limit, an account's messages wait; they do not fail.
func TestDailyLimitWaits(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			e := newEnv(t, storetest.Open(t, d), outgoing.Config{})
			p := e.peer(t, testpeer.SMTPStartTLS, nil)
			in := accountInput(p, outgoing.SecuritySTARTTLS, "")
			in.DailyLimit = ptr(2)
			if _, _, err := e.svc.CreateAccount(context.Background(), admin, in); err != nil {
				t.Fatal(err)
			}
			var ids []int64
			for i := range 3 {
				ids = append(ids, e.submit(t, admin, draft(siteAddr, string(rune('a'+i))+"@example.org")).ID)
			}
			e.process(t)
			if n := len(p.Messages()); n != 2 {
				t.Fatalf("sent %d under a limit of 2", n)
			}
			last := e.status(t, ids[2])
			if last.Status != outgoing.StatusQueued || last.NextAttemptAt == nil || last.NextAttemptAt.Sub(e.clock.Now()) < 23*time.Hour {
				t.Fatalf("the third message: status %q next %v, want queued for about a day", last.Status, last.NextAttemptAt)
			}
			e.clock.Advance(25 * time.Hour)
			e.process(t)
			if got := e.status(t, ids[2]); got.Status != outgoing.StatusSent {
				t.Errorf("after the window: status %q, want sent", got.Status)
			}
		})
	}
}
