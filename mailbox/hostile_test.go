package mailbox

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/internal/testpeer"
	"github.com/mailsync/mailsync/outgoing"
)

// Bounds of the hostile-server rows (docs/security.md, "Hostile servers").
const (
	hostileLogin    = "ann@example.test"
	hostilePassword = "Hostile-Pa55-word"
	hostileHeap     = 64 << 20 // heap growth allowed per row
	hostileTimeout  = 5 * time.Second
	hostileStall    = time.Second // check timeout of the rows that stall
)

// TestHostileIMAPCheck runs the IMAP check against every hostile IMAP
// server of testpeer.IMAPCases that it reaches: each ends at the expected
// step with the expected reply or cause, without a panic, a goroutine left
// behind, more than 64 MiB of heap growth, or the password or a LOGIN in
// clear text.
func TestHostileIMAPCheck(t *testing.T) {
	ca := testpeer.NewCA(t)
	var tally testpeer.ProbeTally
	for _, hc := range testpeer.IMAPCases() {
		want := hc.Check
		if want == nil {
			continue
		}
		t.Run(hc.Name, func(t *testing.T) {
			peer := hc.Start(t, ca)
			n, logs := testNetwork(ca.Pool())
			timeout := hostileTimeout
			if hc.Stalls {
				timeout = hostileStall
			}
			s := IMAPSettings{Host: peer.Host(), Port: peer.Port(), Security: outgoing.Security(hc.Security),
				Login: hostileLogin, Password: secret.Secret(hostilePassword)}
			var res IMAPCheckResult
			pr := testpeer.Probe(t, &testpeer.ProbeOptions{Limit: timeout + 10*time.Second}, func() {
				res = n.Check(context.Background(), s, "en", timeout)
			})
			tally.Add(hc.Name, pr)
			pr.Check(t, hostileHeap)
			t.Logf("heap growth %.1f MiB, allocated %.1f MiB, %v", testpeer.MiB(pr.HeapGrowth), testpeer.MiB(pr.Allocated), pr.Elapsed.Round(time.Millisecond))

			rep := res.Report
			last := lastStep(rep)
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
			assertNoSecret(t, res, logs, hostilePassword)
			assertNothingInClear(t, peer, hc.Security)
		})
	}
	t.Logf("hostile IMAP check: %v", tally)
}

// assertNothingInClear fails when, with security other than none, the peer
// read a LOGIN, an AUTHENTICATE or the password in clear text.
func assertNothingInClear(t *testing.T, peer *testpeer.HostilePeer, security string) {
	t.Helper()
	clear := peer.ClearText()
	if strings.Contains(clear, hostilePassword) {
		t.Errorf("the password went out in clear text:\n%s", clear)
	}
	if security != "none" && (peer.HasCommand("LOGIN", false) || peer.HasCommand("AUTHENTICATE", false)) {
		t.Errorf("LOGIN or AUTHENTICATE went out in clear text:\n%s", clear)
	}
}
