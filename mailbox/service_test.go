package mailbox

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/netguard"
	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/store/storetest"
	"github.com/mailsync/mailsync/internal/testpeer"
	"github.com/mailsync/mailsync/outgoing"
)

const (
	annAddr     = "ann@example.test"
	annIMAPPass = "imap-Secret-1"
	annSMTPPass = "smtp-Secret-2"
)

var (
	ann = outgoing.Caller{UserID: 2, Lang: "en"}
	bob = outgoing.Caller{UserID: 3, Lang: "en"}
	adm = outgoing.Caller{UserID: 1, Admin: true, Lang: "en"}
)

type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type env struct {
	db    *store.DB
	dv    *testpeer.Dovecot
	smtp  *testpeer.SMTPServer
	out   *outgoing.Service
	mbs   *Service
	clock *testClock
	ca    *testpeer.CA
}

func newEnv(t *testing.T, d store.Dialect, smtpScript *testpeer.SMTPScript) *env {
	t.Helper()
	ca := testpeer.NewCA(t)
	dv := testpeer.StartDovecot(t, &testpeer.DovecotOptions{CA: ca})
	dv.AddUser(t, annAddr, annIMAPPass)
	db := storetest.Open(t, d)
	for _, u := range []struct {
		id    int64
		email string
	}{{1, "admin@localhost"}, {2, "ann@example.com"}, {3, "bob@example.com"}} {
		if err := db.Gorm.Exec("INSERT INTO users (id, email, name, admin, created_at) VALUES (?, ?, '', ?, ?)",
			u.id, u.email, u.id == 1, time.Now()).Error; err != nil {
			t.Fatal(err)
		}
	}
	keyText, _ := secret.GenerateKey()
	key, _ := secret.ParseKey(keyText)
	box := secret.NewBox(key)
	dialer := &netguard.Dialer{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	clock := &testClock{now: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)}
	// Debug level, and a failure wherever a password shows in a record.
	log := slog.New(testpeer.CanaryHandler(t, slog.DiscardHandler, []string{annAddr}, annIMAPPass, annSMTPPass))
	out := outgoing.NewService(outgoing.Deps{DB: db, Box: box, Clock: clock, Logger: log,
		Network: &outgoing.Network{Dialer: dialer, RootCAs: ca.Pool(), HelloName: "mailsync.test", Logger: log}},
		outgoing.Config{CheckTimeout: 3 * time.Second})
	mbs := NewService(Deps{DB: db, Box: box, Outgoing: out, Now: clock.Now, Logger: log,
		IMAP: &IMAPNetwork{Dialer: dialer, RootCAs: ca.Pool(), Logger: log}},
		Config{CheckTimeout: 3 * time.Second, OutgoingStatusTTL: 30 * time.Second})
	smtp := testpeer.StartSMTP(t, &testpeer.SMTPOptions{Mode: testpeer.SMTPStartTLS, TLS: ca.ServerTLS(t),
		Users: map[string]string{annAddr: annSMTPPass}, Script: smtpScript})
	return &env{db: db, dv: dv, smtp: smtp, out: out, mbs: mbs, clock: clock, ca: ca}
}

func (e *env) connect(t *testing.T, c outgoing.Caller) Mailbox {
	t.Helper()
	mb, res, err := e.mbs.Connect(context.Background(), c, ConnectInput{
		Email: annAddr, Name: "Ann", Password: annIMAPPass,
		IMAP: &IMAPEndpoint{Host: "localhost", Port: e.dv.TLSPort(), Security: outgoing.SecuritySSL},
	})
	if err != nil {
		t.Fatalf("Connect() = %v; report %+v", err, res.Report)
	}
	return mb
}

func (e *env) smtpIn(password string) *SMTPInput {
	pw := secret.Secret(password)
	return &SMTPInput{Host: "localhost", Port: e.smtp.Port(), Security: outgoing.SecuritySTARTTLS, Login: annAddr, Password: &pw}
}

func (e *env) senders(t *testing.T, userID int64) []outgoing.Sender {
	t.Helper()
	var out []outgoing.Sender
	if err := e.db.Gorm.Where("user_id = ?", userID).Order("id").Find(&out).Error; err != nil {
		t.Fatal(err)
	}
	return out
}

func count(t *testing.T, db *store.DB, table string) int64 {
	t.Helper()
	var n int64
	if err := db.Gorm.Table(table).Count(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

func TestConnectChecksIMAPFirst(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			e := newEnv(t, d, nil)
			ctx := context.Background()
			_, res, err := e.mbs.Connect(ctx, ann, ConnectInput{
				Email: annAddr, Password: "wrong", IMAP: &IMAPEndpoint{Host: "localhost", Port: e.dv.TLSPort(), Security: outgoing.SecuritySSL},
			})
			ae, ok := apperr.As(err)
			if !ok || ae.Code != "check_failed" || !errors.Is(err, apperr.ErrUnprocessable) || res.Report.Failed != StepLogin {
				t.Fatalf("Connect() with a wrong password = %v, failed step %q; want 422 at login", err, res.Report.Failed)
			}
			if n := count(t, e.db, "mailboxes"); n != 0 {
				t.Fatalf("a mailbox was saved after a failed check")
			}
			mb := e.connect(t, ann)
			folders, err := e.mbs.Folders(ctx, ann, mb.ID)
			if err != nil {
				t.Fatal(err)
			}
			selected := map[string]bool{}
			var sentUse string
			for _, f := range folders {
				if f.Selected {
					selected[f.Name] = true
				}
				if f.Name == "Sent" {
					sentUse = f.SpecialUse
				}
			}
			if len(selected) != 2 || !selected["INBOX"] || !selected["Sent"] || sentUse != `\Sent` {
				t.Errorf("folders selected %v, Sent special-use %q; want INBOX and Sent (\\Sent)", selected, sentUse)
			}
			// The same address twice is a conflict; another user may connect it.
			if _, _, err := e.mbs.Connect(ctx, ann, ConnectInput{Email: strings.ToUpper(annAddr), Password: annIMAPPass,
				IMAP: &IMAPEndpoint{Host: "localhost", Port: e.dv.TLSPort(), Security: outgoing.SecuritySSL}}); !errors.Is(err, apperr.ErrConflict) {
				t.Errorf("connecting the same address again = %v, want conflict", err)
			}
			// Another user's id answers as missing.
			if _, err := e.mbs.Get(ctx, bob, mb.ID); !errors.Is(err, apperr.ErrNotFound) {
				t.Errorf("Get() by another user = %v, want not found", err)
			}
			if _, err := e.mbs.Get(ctx, adm, mb.ID); err != nil {
				t.Errorf("Get() by an admin = %v", err)
			}
			// Choosing folders: unknown names are refused.
			if _, err := e.mbs.SetFolders(ctx, ann, mb.ID, []string{"INBOX", "Nope"}); err == nil {
				t.Errorf("SetFolders() with an unknown folder = nil")
			}
			if fs, err := e.mbs.SetFolders(ctx, ann, mb.ID, []string{"INBOX", "Drafts"}); err != nil || !selectedNames(fs)["Drafts"] || selectedNames(fs)["Sent"] {
				t.Errorf("SetFolders() = %v, %v", selectedNames(fs), err)
			}
		})
	}
}

func selectedNames(fs []FolderRow) map[string]bool {
	m := map[string]bool{}
	for _, f := range fs {
		if f.Selected {
			m[f.Name] = true
		}
	}
	return m
}

func TestOutgoingBlockAndMirroredSender(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			e := newEnv(t, d, nil)
			ctx := context.Background()
			mb := e.connect(t, ann)

			// Manual IMAP without SMTP fields: they are required.
			_, _, err := e.mbs.SetOutgoing(ctx, ann, mb.ID, OutgoingInput{Enabled: true})
			if ae, ok := apperr.As(err); !ok || ae.Field != "smtp.host" {
				t.Fatalf("SetOutgoing() without SMTP fields = %v, want 400 naming smtp.host", err)
			}
			// A wrong password: 422, nothing changes, no sender.
			_, rep, err := e.mbs.SetOutgoing(ctx, ann, mb.ID, OutgoingInput{Enabled: true, SMTP: e.smtpIn("wrong")})
			if !errors.Is(err, apperr.ErrUnprocessable) || rep == nil || rep.Failed != outgoing.StepAuth {
				t.Fatalf("SetOutgoing() with a wrong password = %v, report %+v; want 422 at auth", err, rep)
			}
			if got, _ := e.mbs.Get(ctx, ann, mb.ID); got.OutEnabled || got.SMTPHost != "" {
				t.Errorf("a failed check changed the mailbox: %+v", got)
			}
			if s := e.senders(t, ann.UserID); len(s) != 0 {
				t.Errorf("senders after a failed check: %+v", s)
			}
			// Right: the mirrored sender exists.
			if _, _, err := e.mbs.SetOutgoing(ctx, ann, mb.ID, OutgoingInput{Enabled: true, SaveCopy: true, SMTP: e.smtpIn(annSMTPPass)}); err != nil {
				t.Fatalf("SetOutgoing() = %v", err)
			}
			ss := e.senders(t, ann.UserID)
			if len(ss) != 1 || ss[0].Kind != outgoing.KindMailbox || ss[0].MailboxID == nil || *ss[0].MailboxID != mb.ID || ss[0].Email != annAddr {
				t.Fatalf("senders = %+v, want the mirrored mailbox sender", ss)
			}
			// The settings view checks again: fine now.
			v, err := e.mbs.Settings(ctx, ann, mb.ID)
			if err != nil || v.Status == nil || !v.Status.OK || v.SMTP == nil || v.SMTP.Password != "" {
				t.Fatalf("Settings() = %+v, %v; want an OK status and no password", v.Status, err)
			}
			// The password changes on the server: within the TTL the old
			// result stands; after it, the view reports auth.
			e.smtp.SetPassword(annAddr, "changed-on-server")
			if v, _ := e.mbs.Settings(ctx, ann, mb.ID); !v.Status.OK {
				t.Errorf("within the TTL the status changed: %+v", v.Status)
			}
			e.clock.Advance(31 * time.Second)
			v, err = e.mbs.Settings(ctx, ann, mb.ID)
			if err != nil || v.Status.OK || v.Status.Step != outgoing.StepAuth || v.Status.Code != "auth_rejected" {
				t.Fatalf("after the TTL: status %+v, %v; want an auth failure", v.Status, err)
			}
			e.smtp.SetPassword(annAddr, annSMTPPass)

			// An own-SMTP sender for the same address is removed with the
			// mirrored one when external SMTP is turned off.
			if _, _, err := e.out.CreateSMTPSender(ctx, ann, outgoing.SMTPSenderInput{Email: annAddr, Name: "Ann CRM",
				Settings: outgoing.Settings{Host: "localhost", Port: e.smtp.Port(), Security: outgoing.SecuritySTARTTLS,
					Auth: outgoing.AuthLogin, Login: annAddr, Password: annSMTPPass}}); err != nil {
				t.Fatalf("CreateSMTPSender() = %v", err)
			}
			if n := len(e.senders(t, ann.UserID)); n != 2 {
				t.Fatalf("%d senders, want 2", n)
			}
			if _, _, err := e.mbs.SetOutgoing(ctx, ann, mb.ID, OutgoingInput{Enabled: false}); err != nil {
				t.Fatal(err)
			}
			if s := e.senders(t, ann.UserID); len(s) != 0 {
				t.Errorf("senders after turning external SMTP off: %+v", s)
			}

			// On again, then DELETE: sender and data gone.
			if _, _, err := e.mbs.SetOutgoing(ctx, ann, mb.ID, OutgoingInput{Enabled: true, SMTP: e.smtpIn(annSMTPPass)}); err != nil {
				t.Fatal(err)
			}
			if err := e.mbs.Delete(ctx, bob, mb.ID); !errors.Is(err, apperr.ErrNotFound) {
				t.Errorf("Delete() by another user = %v, want not found", err)
			}
			if err := e.mbs.Delete(ctx, ann, mb.ID); err != nil {
				t.Fatal(err)
			}
			for _, table := range []string{"mailboxes", "mailbox_folders", "senders"} {
				if n := count(t, e.db, table); n != 0 {
					t.Errorf("%d rows left in %s after DELETE", n, table)
				}
			}
		})
	}
}

// The own-SMTP sender preloads the block when no SMTP fields are given.
func TestOwnSMTPSenderPreloadsTheBlock(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			e := newEnv(t, d, nil)
			ctx := context.Background()
			mb := e.connect(t, ann)
			if _, _, err := e.out.CreateSMTPSender(ctx, ann, outgoing.SMTPSenderInput{Email: annAddr,
				Settings: outgoing.Settings{Host: "localhost", Port: e.smtp.Port(), Security: outgoing.SecuritySTARTTLS,
					Auth: outgoing.AuthLogin, Login: annAddr, Password: annSMTPPass}}); err != nil {
				t.Fatal(err)
			}
			v, err := e.mbs.Settings(ctx, ann, mb.ID)
			if err != nil || v.Suggestion == nil || v.Suggestion.Host != "localhost" || v.Suggestion.Password != "" {
				t.Fatalf("Settings() suggestion = %+v, %v", v.Suggestion, err)
			}
			got, _, err := e.mbs.SetOutgoing(ctx, ann, mb.ID, OutgoingInput{Enabled: true})
			if err != nil || got.OutSource != SourceSender {
				t.Fatalf("SetOutgoing() with no fields = %v, source %q; want the sender's settings", err, got.OutSource)
			}
		})
	}
}

// A mailbox whose address is a system account's: enabling with no SMTP
// fields uses the account.
func TestSystemAccountMailbox(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			e := newEnv(t, d, nil)
			ctx := context.Background()
			sec, auth := outgoing.SecuritySTARTTLS, outgoing.AuthLogin
			pw := secret.Secret(annSMTPPass)
			email, host, port, login := annAddr, "localhost", e.smtp.Port(), annAddr
			if _, _, err := e.out.CreateAccount(ctx, adm, outgoing.AccountInput{Email: &email, Host: &host, Port: &port,
				Security: &sec, Auth: &auth, Login: &login, Password: &pw}); err != nil {
				t.Fatal(err)
			}
			mb := e.connect(t, adm)
			got, rep, err := e.mbs.SetOutgoing(ctx, adm, mb.ID, OutgoingInput{Enabled: true})
			if err != nil || got.OutSource != SourceSystem || rep == nil || !rep.OK {
				t.Fatalf("SetOutgoing() = %v, source %q", err, got.OutSource)
			}
		})
	}
}

func TestSettingsViewBoundedAndShared(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			release := make(chan struct{})
			var blocked sync.Once
			stalled := make(chan struct{})
			e := newEnv(t, d, &testpeer.SMTPScript{
				Rcpt: func(n int, _ string) error {
					if n > 1 { // the first RCPT is the check when saving
						blocked.Do(func() { close(stalled) })
						<-release
					}
					return nil
				},
			})
			defer close(release)
			ctx := context.Background()
			mb := e.connect(t, ann)
			if _, _, err := e.mbs.SetOutgoing(ctx, ann, mb.ID, OutgoingInput{Enabled: true, SMTP: e.smtpIn(annSMTPPass)}); err != nil {
				t.Fatal(err)
			}
			before := e.smtp.Conns()
			const views = 50
			var wg sync.WaitGroup
			results := make(chan *OutgoingStatus, views)
			start := time.Now()
			for range views {
				wg.Go(func() {
					v, err := e.mbs.Settings(ctx, ann, mb.ID)
					if err != nil {
						t.Errorf("Settings() = %v", err)
						return
					}
					results <- v.Status
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			close(results)
			for st := range results {
				if st == nil || st.OK || st.Step != outgoing.StepRcpt || st.Code != "timeout" {
					t.Errorf("status of a stalled server = %+v, want a timeout at rcpt", st)
					break
				}
			}
			if elapsed > 3*time.Second+time.Second {
				t.Errorf("50 views took %v, want within the check timeout + 1 s", elapsed)
			}
			if n := e.smtp.Conns() - before; n != 1 {
				t.Errorf("50 concurrent views made %d SMTP connections, want exactly 1", n)
			}
		})
	}
}

func TestSendWithSaveCopy(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			e := newEnv(t, d, nil)
			ctx := context.Background()
			mb := e.connect(t, ann)
			if _, _, err := e.mbs.SetOutgoing(ctx, ann, mb.ID, OutgoingInput{Enabled: true, SaveCopy: true, SMTP: e.smtpIn(annSMTPPass)}); err != nil {
				t.Fatal(err)
			}
			m, err := e.out.Submit(ctx, ann, outgoing.Draft{From: annAddr, To: []string{"client@example.org"}, Subject: "Offer", Text: "Hello"}, outgoing.SubmitOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if m.RouteKind != outgoing.KindMailbox {
				t.Fatalf("routed as %q, want mailbox", m.RouteKind)
			}
			w := e.out.NewWorker()
			if _, err := w.ProcessDue(ctx); err != nil {
				t.Fatal(err)
			}
			got, _ := e.out.GetMessage(ctx, ann, m.ID)
			if got.Status != outgoing.StatusSent || got.SentCopy != CopyAppended {
				t.Fatalf("status %q copy %q, want sent and appended", got.Status, got.SentCopy)
			}
			if n := len(e.smtp.Messages()); n != 1 {
				t.Errorf("the SMTP peer received %d messages, want 1", n)
			}
			c := e.dv.Client(t, annAddr, annIMAPPass)
			sentCount := func() uint32 {
				t.Helper()
				sel, err := c.Select("Sent", &imap.SelectOptions{ReadOnly: true}).Wait()
				if err != nil {
					t.Fatal(err)
				}
				return sel.NumMessages
			}
			if n := sentCount(); n != 1 {
				t.Fatalf("Sent holds %d messages, want 1", n)
			}
			// The same Message-ID again: nothing appended.
			full, _ := e.out.GetMessage(ctx, adm, m.ID)
			raw, err := e.out.Raw(ctx, adm, m.ID)
			if err != nil || len(raw) == 0 {
				t.Fatalf("read the message's body: %d bytes, %v", len(raw), err)
			}
			full.Raw = raw
			res, err := mailboxRouter{e.mbs}.SaveCopy(ctx, mb.ID, full)
			if err != nil || res != CopyExists {
				t.Errorf("SaveCopy() of the same message = %q, %v; want exists", res, err)
			}
			if n := sentCount(); n != 1 {
				t.Errorf("Sent holds %d messages after a second copy, want 1", n)
			}
			// A provider that files sent mail itself: nothing appended.
			if err := e.db.Gorm.Model(&Mailbox{}).Where("id = ?", mb.ID).Update("provider", "gmail").Error; err != nil {
				t.Fatal(err)
			}
			m2, err := e.out.Submit(ctx, ann, outgoing.Draft{From: annAddr, To: []string{"client@example.org"}, Subject: "Two", Text: "Hi"}, outgoing.SubmitOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.ProcessDue(ctx); err != nil {
				t.Fatal(err)
			}
			got2, _ := e.out.GetMessage(ctx, ann, m2.ID)
			if got2.Status != outgoing.StatusSent || got2.SentCopy != CopySkipped {
				t.Errorf("with a provider filing sent mail: status %q copy %q", got2.Status, got2.SentCopy)
			}
			if n := sentCount(); n != 1 {
				t.Errorf("Sent holds %d messages, want still 1", n)
			}
		})
	}
}
