package outgoing_test

import (
	"bytes"
	"context"
	"fmt"
	"net/mail"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/store/storetest"
	"github.com/mailsync/mailsync/internal/testpeer"
	"github.com/mailsync/mailsync/outgoing"
)

// countStatus counts the outbox rows in each status.
func countStatus(t *testing.T, db *store.DB) map[string]int64 {
	t.Helper()
	var rows []struct {
		Status string
		N      int64
	}
	if err := db.Gorm.Raw("SELECT status, count(*) AS n FROM outbox GROUP BY status").Scan(&rows).Error; err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, r := range rows {
		out[r.Status] = r.N
	}
	return out
}

// TestRunClaimsAheadAndReleasesOnStop: Run claims the next round while a
// round is on the wire, sends every message exactly once, and when it is
// stopped the round it claimed ahead goes back to the queue unsent.
func TestRunClaimsAheadAndReleasesOnStop(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, outgoing.Config{BatchSize: 10, PollInterval: time.Hour})
		var hold atomic.Bool
		gate := make(chan struct{})
		p := e.peer(t, testpeer.SMTPStartTLS, &testpeer.SMTPScript{Mail: func(int, string) error {
			if hold.Load() {
				<-gate
			}
			return nil
		}})
		e.account(t, p, outgoing.SecuritySTARTTLS, "Site")
		const n = 35
		for i := range n {
			d := draft(siteAddr, "someone@example.org")
			d.Subject = fmt.Sprintf("message %d", i)
			e.submit(t, admin, d)
		}

		// All of them, through several rounds, each exactly once.
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.w.Run(ctx) }()
		wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer wcancel()
		if _, err := p.WaitMessages(wctx, n); err != nil {
			t.Fatalf("waiting for %d messages: %v", n, err)
		}
		// Run returns only once the round on the wire has its outcomes
		// recorded: every message the peer has is sent by then.
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run() = %v", err)
		}
		if st := countStatus(t, db); st[outgoing.StatusSent] != n {
			t.Fatalf("statuses %v, want %d sent", st, n)
		}
		seen := map[string]bool{}
		for _, m := range p.Messages() {
			msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
			if err != nil {
				t.Fatal(err)
			}
			id := msg.Header.Get("Message-Id")
			if seen[id] {
				t.Errorf("message %s delivered twice", id)
			}
			seen[id] = true
		}

		// Now a round stuck on the wire and one claimed ahead: stop.
		hold.Store(true)
		for i := range n {
			d := draft(siteAddr, "someone@example.org")
			d.Subject = fmt.Sprintf("second %d", i)
			e.submit(t, admin, d)
		}
		ctx, cancel = context.WithCancel(context.Background())
		defer cancel()
		go func() { done <- e.w.Run(ctx) }()
		deadline := time.Now().Add(30 * time.Second)
		for countStatus(t, db)[outgoing.StatusSending] < 20 {
			if time.Now().After(deadline) {
				t.Fatalf("statuses %v, want a round sending and one claimed ahead", countStatus(t, db))
			}
			time.Sleep(10 * time.Millisecond) // polling the database for a state, bounded by deadline
		}
		cancel()
		close(gate)
		if err := <-done; err != nil {
			t.Fatalf("Run() = %v", err)
		}
		st := countStatus(t, db)
		if st[outgoing.StatusSending] != 0 {
			t.Errorf("after Run returned: %v, want nothing left sending", st)
		}
		if st[outgoing.StatusQueued] < 10 {
			t.Errorf("after Run returned: %v, want at least the round claimed ahead (10) back in the queue", st)
		}
		var attempts int64
		if err := db.Gorm.Raw("SELECT count(*) FROM outbox WHERE status = ? AND attempts <> 0", outgoing.StatusQueued).Scan(&attempts).Error; err != nil {
			t.Fatal(err)
		}
		if attempts != 0 {
			var rows []struct {
				ID, Attempts int
				LastStep     string
				LastError    string
			}
			db.Gorm.Raw("SELECT id, attempts, last_step, last_error FROM outbox WHERE status = ? AND attempts <> 0", outgoing.StatusQueued).Scan(&rows)
			t.Errorf("%d messages back in the queue with attempts counted, want none: %+v", attempts, rows)
		}
		if got, sent := int64(len(p.Messages())), st[outgoing.StatusSent]; got != sent {
			t.Errorf("the peer has %d messages, the outbox says %d sent", got, sent)
		}
	})
}

// TestRunTakesSubmittedMessagesInMemory: while Run runs, a message
// submitted to its service is committed already leased to the worker and
// handed to it in memory (no claim: polling is off and nothing wakes the
// worker), its body stored compressed and sent byte for byte; when Run
// stops, the handed messages it did not start go back to the queue unsent,
// with no attempt counted.
func TestRunTakesSubmittedMessagesInMemory(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, outgoing.Config{BatchSize: 10, PollInterval: time.Hour})
		var hold atomic.Bool
		gate := make(chan struct{})
		entered := make(chan struct{}, 100)
		p := e.peer(t, testpeer.SMTPStartTLS, &testpeer.SMTPScript{Mail: func(int, string) error {
			if hold.Load() {
				entered <- struct{}{}
				<-gate
			}
			return nil
		}})
		e.account(t, p, outgoing.SecuritySTARTTLS, "Site") // its check passes MAIL FROM unheld
		hold.Store(true)
		d := draft(siteAddr, "someone@example.org")
		d.Text = strings.Repeat("the quarterly report is attached; please review the figures before Monday\n", 200)

		// start runs the worker and returns once its handoff is open.
		start := func() (stop func()) {
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- e.w.Run(ctx) }()
			deadline := time.Now().Add(30 * time.Second)
			for !outgoing.HandoffOpen(e.svc) {
				if time.Now().After(deadline) {
					t.Fatal("Run did not open its handoff")
				}
				time.Sleep(time.Millisecond) // waiting for Run to start, bounded by deadline
			}
			return func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Run() = %v", err)
				}
			}
		}

		stop := start()
		first := e.submit(t, admin, d)
		if first.Status != outgoing.StatusQueued {
			t.Errorf("Submit() returned status %q, want queued", first.Status)
		}
		<-entered // on the wire, held: its row shows what the submission left
		row := e.status(t, first.ID)
		if row.Status != outgoing.StatusSending || row.LeaseOwner == "" || row.Attempts != 0 {
			t.Errorf("handed message: %s, lease owner %q, attempts %d; want sending, leased, 0 attempts until the outcome",
				row.Status, row.LeaseOwner, row.Attempts)
		}
		var codec string
		if err := db.Gorm.Raw("SELECT codec FROM outbox_bodies WHERE outbox_id = ?", first.ID).Row().Scan(&codec); err != nil || codec != "s2" {
			t.Errorf("body codec = %q, %v; want s2", codec, err)
		}
		ids := []int64{first.ID}
		for range 3 { // handed over while the first is held
			ids = append(ids, e.submit(t, admin, d).ID)
		}
		hold.Store(false)
		close(gate)
		wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer wcancel()
		got, err := p.WaitMessages(wctx, len(ids))
		if err != nil {
			t.Fatalf("waiting for %d messages: %v (statuses %v)", len(ids), err, countStatus(t, db))
		}
		want, err := e.svc.Raw(context.Background(), admin, first.ID)
		if err != nil {
			t.Fatal(err)
		}
		same := 0
		for _, m := range got {
			if bytes.Equal(m.Data, want) {
				same++
			}
		}
		if same != 1 {
			t.Errorf("%d messages at the peer equal the stored bytes of message %d (%d bytes), want 1", same, first.ID, len(want))
		}
		stop()
		for _, id := range ids {
			if st := e.status(t, id).Status; st != outgoing.StatusSent {
				t.Errorf("message %d: %s, want sent", id, st)
			}
		}

		// Stop while handed messages wait behind ones held on the wire.
		hold.Store(true)
		gate = make(chan struct{})
		stop = start()
		// One message on the wire, alone in its round; five handed over
		// behind it, waiting in memory for the next round.
		const n = 6
		e.submit(t, admin, d)
		<-entered
		for range n - 1 {
			e.submit(t, admin, d)
		}
		stopped := make(chan struct{})
		go func() { defer close(stopped); stop() }()
		// Run stops taking messages as soon as it is cancelled; the ones
		// on the wire finish once the peer lets them go.
		deadline := time.Now().Add(30 * time.Second)
		for outgoing.HandoffOpen(e.svc) {
			if time.Now().After(deadline) {
				t.Fatal("Run did not close its handoff when cancelled")
			}
			time.Sleep(time.Millisecond) // waiting for the cancel to reach Run, bounded by deadline
		}
		close(gate)
		<-stopped
		st := countStatus(t, db)
		if st[outgoing.StatusSending] != 0 || st[outgoing.StatusSent]+st[outgoing.StatusQueued] != int64(len(ids)+n) {
			t.Errorf("after Run returned: %v, want every message sent or queued", st)
		}
		if st[outgoing.StatusQueued] != n-1 {
			t.Errorf("after Run returned: %v, want the %d handed over back in the queue", st, n-1)
		}
		var counted int64
		if err := db.Gorm.Raw("SELECT count(*) FROM outbox WHERE status = ? AND (attempts <> 0 OR lease_owner <> '')", outgoing.StatusQueued).Scan(&counted).Error; err != nil {
			t.Fatal(err)
		}
		if counted != 0 {
			t.Errorf("%d messages back in the queue with an attempt counted or a lease, want none", counted)
		}
		if got, sent := int64(len(p.Messages())), st[outgoing.StatusSent]; got != sent {
			t.Errorf("the peer has %d messages, the outbox says %d sent", got, sent)
		}
	})
}

// TestClaimFailsAnUnreadableBody: a stored body that does not decode fails
// its own message with the reason at the claim, and the others in the same
// claim are sent.
func TestClaimFailsAnUnreadableBody(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, outgoing.Config{})
		p := e.peer(t, testpeer.SMTPStartTLS, nil)
		e.account(t, p, outgoing.SecuritySTARTTLS, "Site")
		bad := e.submit(t, admin, draft(siteAddr, "someone@example.org"))
		good := e.submit(t, admin, draft(siteAddr, "someone@example.org"))
		if err := db.Gorm.Exec("UPDATE outbox_bodies SET codec = 'zstd' WHERE outbox_id = ?", bad.ID).Error; err != nil {
			t.Fatal(err)
		}
		e.process(t)
		if m := e.status(t, bad.ID); m.Status != outgoing.StatusFailed || !strings.Contains(m.LastError, "zstd") {
			t.Errorf("unreadable message: %s, %q; want failed naming the codec", m.Status, m.LastError)
		}
		if m := e.status(t, good.ID); m.Status != outgoing.StatusSent {
			t.Errorf("the other message: %s (%s), want sent", m.Status, m.LastError)
		}
		if n := len(p.Messages()); n != 1 {
			t.Errorf("the peer has %d messages, want 1", n)
		}
	})
}

// TestExpiredLeaseOfAnUntriedMessage: a message whose worker died before
// trying it (leased with no attempt counted, as a handed-over one is) goes
// back to the queue and is sent as any other, not counted as unknown; one
// whose attempt had started becomes unknown, as it may have been
// delivered.
func TestExpiredLeaseOfAnUntriedMessage(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db, outgoing.Config{})
		p := e.peer(t, testpeer.SMTPStartTLS, nil)
		e.account(t, p, outgoing.SecuritySTARTTLS, "Site")
		untried := e.submit(t, admin, draft(siteAddr, "someone@example.org"))
		tried := e.submit(t, admin, draft(siteAddr, "someone@example.org"))
		past := e.clock.Now().Add(-time.Minute)
		for id, attempts := range map[int64]int{untried.ID: 0, tried.ID: 1} {
			if err := db.Gorm.Exec("UPDATE outbox SET status = ?, lease_owner = 'dead/1/x', lease_until = ?, attempts = ? WHERE id = ?",
				outgoing.StatusSending, past, attempts, id).Error; err != nil {
				t.Fatal(err)
			}
		}
		e.process(t)
		if m := e.status(t, untried.ID); m.Status != outgoing.StatusSent || m.UnknownCount != 0 || m.Attempts != 1 {
			t.Errorf("untried message: %s, unknown %d, attempts %d; want sent, 0, 1", m.Status, m.UnknownCount, m.Attempts)
		}
		if m := e.status(t, tried.ID); m.UnknownCount != 1 {
			t.Errorf("tried message: %s, unknown %d; want counted unknown once", m.Status, m.UnknownCount)
		}
	})
}
