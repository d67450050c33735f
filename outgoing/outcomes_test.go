package outgoing

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/store/storetest"
)

// One round's outcomes of every kind are written by one UPDATE: each
// message gets its own new state, a message whose lease another worker
// took keeps that worker's state, and every attempt is in the send log.
func TestWriteOutcomesMixedBatch(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		s := NewService(Deps{DB: db}, Config{})
		w := s.NewWorker()
		now := time.Now().UTC().Truncate(time.Second)
		lease := now.Add(time.Minute)
		var msgs []OutboxMessage
		for i := range 5 {
			m := gcMessage(i, nil, 10)
			m.Status, m.LeaseOwner, m.LeaseUntil, m.Attempts = StatusSending, w.owner, &lease, 1
			if i == 4 {
				m.LeaseOwner = "another-worker"
			}
			if err := db.Gorm.Create(m).Error; err != nil {
				t.Fatal(err)
			}
			msgs = append(msgs, *m)
		}
		rec := &recorder{in: make(chan outcome, 8)}
		tgt := Target{Email: "a@example.com"}
		ok := &Reply{Code: 250, Text: "2.0.0 queued as A1"}
		w.finish(rec, msgs[0], tgt, attempt{reply: ok})
		w.finish(rec, msgs[1], tgt, attempt{err: &StepError{Step: StepMailFrom, Reply: &Reply{Code: 451, Text: "4.3.0 busy"}}})
		w.finish(rec, msgs[2], tgt, attempt{err: &StepError{Step: StepRcpt, Reply: &Reply{Code: 550, Text: "5.1.1 unknown"}}})
		w.finish(rec, msgs[3], tgt, attempt{err: &StepError{Step: StepData, AfterData: true}})
		w.finish(rec, msgs[4], tgt, attempt{reply: ok})
		close(rec.in)
		var batch []outcome
		for o := range rec.in {
			batch = append(batch, o)
		}
		// Every kind of outcome sets the same columns: the UPDATE's text
		// depends only on the number of outcomes.
		first, _ := outcomeUpdate(batch[:2], w.owner)
		if other, _ := outcomeUpdate(batch[2:4], w.owner); other != first {
			t.Errorf("UPDATE for sent and retry:\n%s\nfor failed and unknown:\n%s", first, other)
		}
		if err := w.recordOutcomes(ctx, batch); err != nil {
			t.Fatal(err)
		}
		want := []struct {
			status string
			step   string
			code   int
			due    bool
			owner  string
		}{
			{StatusSent, "data", 250, false, ""},
			{StatusQueued, "mail_from", 451, true, ""},
			{StatusFailed, "rcpt", 550, false, ""},
			{StatusUnknown, "data", 0, true, ""},
			{StatusSending, "", 0, true, "another-worker"},
		}
		for i, m := range msgs {
			var got OutboxMessage
			if err := db.Gorm.Omit("raw").First(&got, m.ID).Error; err != nil {
				t.Fatal(err)
			}
			wt := want[i]
			if got.Status != wt.status || got.LastStep != wt.step || got.LastCode != wt.code ||
				(got.NextAttemptAt != nil) != wt.due || got.LeaseOwner != wt.owner {
				t.Errorf("message %d: status %q step %q code %d due %v owner %q; want %+v",
					i, got.Status, got.LastStep, got.LastCode, got.NextAttemptAt != nil, got.LeaseOwner, wt)
			}
			if i == 0 && (got.SentAt == nil || !strings.Contains(got.LastReply, "queued as A1")) {
				t.Errorf("sent message: sent_at %v, last_reply %q", got.SentAt, got.LastReply)
			}
			if i == 3 && got.UnknownCount != 1 {
				t.Errorf("unknown message: unknown_count %d, want 1", got.UnknownCount)
			}
		}
		var entries []LogEntry
		if err := db.Gorm.Order("outbox_id").Find(&entries).Error; err != nil {
			t.Fatal(err)
		}
		if len(entries) != 5 {
			t.Fatalf("send log has %d entries, want 5", len(entries))
		}
		for i, e := range entries {
			if lost := strings.HasPrefix(e.Reply, leaseLostReply); lost != (i == 4) {
				t.Errorf("entry %d: reply %q; want it to say the lease was lost only for the message whose lease was taken", i, e.Reply)
			}
			if e.OutboxID != msgs[i].ID || e.Status != []string{LogSent, LogRetry, LogFailed, LogUnknown, LogSent}[i] {
				t.Errorf("entry %d: outbox_id %d status %q", i, e.OutboxID, e.Status)
			}
		}
	})
}

// A round claims at most maxClaimBytes of messages (at least one), so a
// queue of large messages is not all read into memory at once.
func TestClaimIsBoundedByBytes(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		s := NewService(Deps{DB: db}, Config{})
		w := s.NewWorker()
		for i, size := range []int64{maxClaimBytes / 2, maxClaimBytes / 2, 1, maxClaimBytes + 1} {
			m := gcMessage(i, nil, 10)
			m.Size = size
			if err := db.Gorm.Create(m).Error; err != nil {
				t.Fatal(err)
			}
			body := newOutboxBody(m)
			if err := db.Gorm.Create(&body).Error; err != nil {
				t.Fatal(err)
			}
		}
		var rounds []int
		for range 4 {
			msgs, _, err := w.claim(context.Background(), s.Config().BatchSize)
			if err != nil {
				t.Fatal(err)
			}
			rounds = append(rounds, len(msgs))
		}
		// Two halves fill a round; the small one and the oversized one
		// are two more (the oversized one alone).
		if want := []int{2, 1, 1, 0}; !slices.Equal(rounds, want) {
			t.Errorf("messages per round = %v, want %v", rounds, want)
		}
	})
}

// A worker stopped while a round reads its route's settings tried nothing:
// the round's messages go back in the queue, due now, without the attempt
// their claim counted and without a send-log entry. (Before, they were
// recorded as a failed attempt with "context canceled" and backed off.)
func TestStopBeforeTheRoundReleasesIt(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		s := NewService(Deps{DB: db}, Config{})
		w := s.NewWorker()
		lease := time.Now().UTC().Add(time.Minute)
		m := gcMessage(1, nil, 10)
		m.Status, m.LeaseOwner, m.LeaseUntil, m.Attempts = StatusSending, w.owner, &lease, 1
		if err := db.Gorm.Create(m).Error; err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		rec := w.startRecorder(ctx, 1)
		w.sendRoute(ctx, rec, KindSystem, 1, []OutboxMessage{*m})
		rec.close()
		var got OutboxMessage
		if err := db.Gorm.First(&got, m.ID).Error; err != nil {
			t.Fatal(err)
		}
		if got.Status != StatusQueued || got.Attempts != 0 || got.LeaseOwner != "" || got.LastError != "" {
			t.Errorf("after a stop before the round: status %q attempts %d owner %q last_error %q; want queued, 0, no owner, no error",
				got.Status, got.Attempts, got.LeaseOwner, got.LastError)
		}
		var entries int64
		if err := db.Gorm.Model(&LogEntry{}).Count(&entries).Error; err != nil {
			t.Fatal(err)
		}
		if entries != 0 {
			t.Errorf("send log has %d entries for a message never tried", entries)
		}
	})
}
