package outgoing_test

import (
	"bytes"
	"context"
	"fmt"
	"net/mail"
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
