package outgoing_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/internal/store/storetest"
	"github.com/mailsync/mailsync/internal/testpeer"
	"github.com/mailsync/mailsync/outgoing"
)

// Bounds of the hostile-server rows (docs/security.md, "Hostile servers").
const (
	hostilePass    = "Hostile-Pa55-word"
	hostileHeap    = 64 << 20 // heap growth allowed per row
	hostileTimeout = 5 * time.Second
	hostileStall   = time.Second // check and send timeout of the rows that stall
)

// TestHostileSMTPCheck runs the SMTP check (up to DATA, with a test
// recipient) against every hostile SMTP server of testpeer.SMTPCases: each
// ends at the expected step with the expected reply or cause, without a
// panic, a goroutine left behind, more than 64 MiB of heap growth, or AUTH
// or the password in clear text.
func TestHostileSMTPCheck(t *testing.T) {
	ca := testpeer.NewCA(t)
	var tally testpeer.ProbeTally
	for _, hc := range testpeer.SMTPCases() {
		want := hc.Check
		if want == nil {
			continue
		}
		t.Run(hc.Name, func(t *testing.T) {
			peer := hc.Start(t, ca)
			var logs strings.Builder
			n := scNetwork(ca, &hostileLog{b: &logs})
			timeout := hostileTimeout
			if hc.Stalls {
				timeout = hostileStall
			}
			req := outgoing.CheckRequest{
				Settings: outgoing.Settings{Host: peer.Host(), Port: peer.Port(), Security: outgoing.Security(hc.Security),
					Auth: outgoing.AuthLogin, Login: scUser, Password: secret.Secret(hostilePass)},
				From: scUser, TestRecipient: scRcpt, Lang: "en", Timeout: timeout,
			}
			var rep outgoing.Report
			pr := testpeer.Probe(t, &testpeer.ProbeOptions{Limit: timeout + 10*time.Second}, func() {
				rep = n.Check(context.Background(), req)
			})
			tally.Add(hc.Name, pr)
			pr.Check(t, hostileHeap)
			last := scLast(rep)
			t.Logf("heap growth %.1f MiB, allocated %.1f MiB, %v; failed %q: %s", testpeer.MiB(pr.HeapGrowth), testpeer.MiB(pr.Allocated),
				pr.Elapsed.Round(time.Millisecond), rep.Failed, last.Explanation)

			if want.Step == "" {
				if !rep.OK {
					t.Fatalf("Check() failed at %q (%s), want OK; steps %+v", rep.Failed, last.Explanation, rep.Steps)
				}
			} else {
				if rep.OK || rep.Failed != outgoing.Step(want.Step) {
					t.Fatalf("Check() step = %q (OK %v), want %q; last %+v", rep.Failed, rep.OK, want.Step, last)
				}
				if last.Explanation == "" || last.Code == "" {
					t.Errorf("Check() failed step has no explanation or code: %+v", last)
				}
			}
			if want.Code != "" && last.Code != want.Code {
				t.Errorf("Check() code = %q, want %q (%s)", last.Code, want.Code, last.Explanation)
			}
			if want.Reply != "" && (last.Reply == nil || !testpeer.Matches(last.Reply.Text, want.Reply)) {
				t.Errorf("Check() reply = %+v, want it to hold %q", last.Reply, want.Reply)
			}
			if !testpeer.Matches(last.Explanation+" "+last.Detail, want.Err) {
				t.Errorf("Check() explanation = %q, want it to hold %q", last.Explanation, want.Err)
			}
			for _, s := range rep.Steps {
				if s.Reply != nil && (strings.ContainsRune(s.Reply.Text, 0) || !utf8Valid(s.Reply.Text)) {
					t.Errorf("step %s: reply text %q holds NUL or invalid UTF-8", s.Step, s.Reply.Text)
				}
			}
			scNoPassword(t, "the report", []byte(fmt.Sprintf("%+v", rep)))
			scNoPassword(t, "the logs", []byte(logs.String()))
			assertNoAuthInClear(t, peer, hc.Security)
		})
	}
	t.Logf("hostile SMTP check: %v", tally)
}

// TestHostileSMTPSend sends one message through the outbox worker to every
// hostile SMTP server of testpeer.SMTPCases, on each database: the message
// ends in the expected status (queued for a retry, failed, unknown, sent)
// with the failing step and the server's reply or the cause recorded,
// without a panic, a goroutine left behind, more than 64 MiB of heap
// growth, or AUTH or the password in clear text.
func TestHostileSMTPSend(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			e := newEnv(t, storetest.Open(t, d), outgoing.Config{SendTimeout: hostileStall, MaxConnsPerRoute: 1})
			var tally testpeer.ProbeTally
			for i, hc := range testpeer.SMTPCases() {
				want := hc.Send
				if want == nil {
					continue
				}
				t.Run(hc.Name, func(t *testing.T) {
					peer := hc.Start(t, e.ca)
					from := fmt.Sprintf("row%d@example.com", i)
					e.hostileAccount(t, peer, hc.Security, from)
					m := e.submit(t, admin, draft(from, "client@example.org"))
					var processed int
					var err error
					pr := testpeer.Probe(t, &testpeer.ProbeOptions{Limit: hostileTimeout + 10*time.Second}, func() {
						processed, err = e.w.ProcessDue(context.Background())
					})
					tally.Add(hc.Name, pr)
					pr.Check(t, hostileHeap)
					if err != nil || processed != 1 {
						t.Fatalf("ProcessDue() = %d, %v; want 1 message", processed, err)
					}
					got := e.status(t, m.ID)
					t.Logf("heap growth %.1f MiB, allocated %.1f MiB, %v; %s at %q: %s / %s", testpeer.MiB(pr.HeapGrowth), testpeer.MiB(pr.Allocated),
						pr.Elapsed.Round(time.Millisecond), got.Status, got.LastStep, got.LastReply, got.LastError)
					if got.Status != want.Status {
						t.Errorf("status = %q, want %q (step %q, reply %q, error %q)", got.Status, want.Status, got.LastStep, got.LastReply, got.LastError)
					}
					if want.Step != "" && got.LastStep != want.Step {
						t.Errorf("last step = %q, want %q (error %q)", got.LastStep, want.Step, got.LastError)
					}
					if !testpeer.Matches(got.LastReply, want.Reply) {
						t.Errorf("last reply = %q, want it to hold %q", got.LastReply, want.Reply)
					}
					if !testpeer.Matches(got.LastError, want.Err) {
						t.Errorf("last error = %q, want it to hold %q", got.LastError, want.Err)
					}
					if want.Status != outgoing.StatusSent && got.LastError == "" {
						t.Errorf("no last error recorded for a %s message", got.Status)
					}
					var log []outgoing.LogEntry
					if err := e.db.Gorm.Where("outbox_id = ?", m.ID).Find(&log).Error; err != nil || len(log) != 1 {
						t.Fatalf("send log of the message = %+v, %v; want one entry", log, err)
					}
					scNoPassword(t, "the message's state", []byte(got.LastError+got.LastReply+log[0].Reply))
					assertNoAuthInClear(t, peer, hc.Security)
				})
			}
			t.Logf("hostile SMTP send (%s): %v", d, tally)
		})
	}
}

// hostileAccount stores an active system account for from on the peer,
// without the check CreateAccount runs (and rate-limits).
func (e *env) hostileAccount(t *testing.T, peer *testpeer.HostilePeer, security, from string) {
	t.Helper()
	now := time.Now().UTC()
	a := outgoing.Account{Active: true, SenderName: "Hostile", Email: from, Host: peer.Host(), Port: peer.Port(),
		Security: outgoing.Security(security), Auth: outgoing.AuthLogin, Login: siteAddr, CheckOK: true, CreatedAt: now, UpdatedAt: now}
	if err := e.db.Gorm.Create(&a).Error; err != nil {
		t.Fatal(err)
	}
	sealed, err := e.box.SealSecret(secret.Secret(hostilePass), secret.AAD("smtp_accounts", "password", a.ID))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.db.Gorm.Model(&a).Update("password", sealed).Error; err != nil {
		t.Fatal(err)
	}
}

// assertNoAuthInClear fails when, with security other than none, the peer
// read AUTH or the password (in any form) in clear text.
func assertNoAuthInClear(t *testing.T, peer *testpeer.HostilePeer, security string) {
	t.Helper()
	clear := peer.ClearText()
	for _, form := range []string{hostilePass, base64.StdEncoding.EncodeToString([]byte(hostilePass)),
		base64.StdEncoding.EncodeToString([]byte("\x00" + scUser + "\x00" + hostilePass)),
		base64.StdEncoding.EncodeToString([]byte("\x00" + siteAddr + "\x00" + hostilePass))} {
		if strings.Contains(clear, form) {
			t.Errorf("the password went out in clear text (as %q):\n%s", form, clear)
		}
	}
	if security == "none" {
		return
	}
	for _, l := range strings.Split(clear, "\n") {
		if strings.HasPrefix(strings.ToUpper(l), "AUTH") {
			t.Errorf("AUTH went out in clear text:\n%s", clear)
		}
	}
}

// hostileLog is a writer for the check's logger, safe for its use.
type hostileLog struct{ b *strings.Builder }

func (l *hostileLog) Write(p []byte) (int, error) { return l.b.Write(p) }

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }
