package imapsync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/store/storetest"
	"github.com/mailsync/mailsync/internal/testpeer"
	"github.com/mailsync/mailsync/mailbox"
	"github.com/mailsync/mailsync/outgoing"
)

// Bounds of the hostile-server rows (docs/security.md, "Hostile servers").
const (
	hostilePassword = "Hostile-Pa55-word"
	hostileHeap     = 64 << 20 // heap growth allowed per row
	hostileCommand  = time.Second
	hostileDial     = 2 * time.Second // the sync's bound for rows that stall while dialling
	hostileTimeout  = 10 * time.Second
)

// TestHostileIMAPSync runs one sync of INBOX (Engine.SyncOnce; the
// engine's worker for the IDLE row) against every hostile IMAP server of
// testpeer.IMAPCases that gets that far, on each database: each ends with
// the expected
// error, naming the step and the problem, or with the expected rows
// stored, without a panic, a goroutine left behind, more than 64 MiB of
// heap growth, or the password in an error or in clear text.
func TestHostileIMAPSync(t *testing.T) {
	storetest.Each(t, testHostileIMAPSync)
}

func testHostileIMAPSync(t *testing.T, db *store.DB) {
	ca := testpeer.NewCA(t)
	v := newTestEnv(t, db, ca, Config{CommandTimeout: hostileCommand, PollInterval: -1})
	var tally testpeer.ProbeTally
	for _, hc := range testpeer.IMAPCases() {
		want := hc.Sync
		if want == nil {
			continue
		}
		t.Run(hc.Name, func(t *testing.T) {
			env := v
			if hc.Worker {
				// The engine's worker takes every mailbox of its database:
				// this one gets a database of its own.
				// A short lease: the lease loop runs every second, and a
				// round that fails is retried at once, not in 10 s.
				env = newTestEnv(t, storetest.Open(t, db.Dialect), ca, Config{CommandTimeout: hostileCommand, PollInterval: -1,
					LeaseTTL: 3 * time.Second})
			}
			peer := hc.Start(t, ca)
			mb := env.insertHostileMailbox(t, peer, hc.Security)
			limit := hostileTimeout
			switch {
			case hc.Stalls:
				limit = hostileDial
			case hc.Worker:
				limit = 2 * hostileTimeout
			}
			var err error
			pr := testpeer.Probe(t, &testpeer.ProbeOptions{Limit: limit + 10*time.Second}, func() {
				if hc.Worker {
					err = env.runUntilError(t, mb.ID)
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), limit)
				defer cancel()
				_, err = env.eng.SyncOnce(ctx, mb.ID)
				if hc.Twice && err == nil {
					_, err = env.eng.SyncOnce(ctx, mb.ID)
				}
			})
			tally.Add(hc.Name, pr)
			pr.Check(t, hostileHeap)
			t.Logf("heap growth %.1f MiB, allocated %.1f MiB, %v; error: %v", testpeer.MiB(pr.HeapGrowth), testpeer.MiB(pr.Allocated), pr.Elapsed.Round(time.Millisecond), err)

			switch {
			case hc.Worker:
				if err != nil {
					t.Fatal(err)
				}
				got, err := env.mbs.ByID(context.Background(), mb.ID)
				if err != nil {
					t.Fatal(err)
				}
				if got.SyncState != StateError || got.LastSyncOK || !strings.HasPrefix(got.LastError, want.Step+" ") ||
					!testpeer.Matches(got.LastError, want.Err) {
					t.Errorf("mailbox after the failed session: state %q, ok %v, last_error %q; want error at step %q naming %q",
						got.SyncState, got.LastSyncOK, got.LastError, want.Step, want.Err)
				}
			case want.Step == "":
				if err != nil {
					t.Fatalf("SyncOnce() = %v, want nil", err)
				}
			default:
				if err == nil {
					t.Fatalf("SyncOnce() = nil, want an error at step %q", want.Step)
				}
				if got := hostileStep(err); got != want.Step {
					t.Errorf("SyncOnce() error at step %q, want %q: %v", got, want.Step, err)
				}
				if !testpeer.Matches(err.Error(), want.Err) {
					t.Errorf("SyncOnce() = %v, want it to hold %q", err, want.Err)
				}
				if strings.Contains(err.Error(), hostilePassword) {
					t.Errorf("SyncOnce() error holds the password: %v", err)
				}
			}
			var stored int64
			if err := env.db.Gorm.Model(&messageRow{}).Where("mailbox_id = ?", mb.ID).Count(&stored).Error; err != nil {
				t.Fatal(err)
			}
			if want.Rows >= 0 && int(stored) != want.Rows {
				t.Errorf("%d messages stored, want %d", stored, want.Rows)
			}
			if check := hostileSyncChecks[hc.Name]; check != nil {
				check(t, env, mb)
			}
			if clear := peer.ClearText(); strings.Contains(clear, hostilePassword) ||
				(hc.Security != "none" && peer.HasCommand("LOGIN", false)) {
				t.Errorf("LOGIN or the password went out in clear text:\n%s", clear)
			}
		})
	}
	t.Logf("hostile IMAP sync (%s): %v", db.Dialect, tally)
}

// hostileSyncChecks are the rows' checks beyond the error and the count.
var hostileSyncChecks = map[string]func(t *testing.T, v *testEnv, mb mailbox.Mailbox){
	"HIGHESTMODSEQ going backwards between syncs": func(t *testing.T, v *testEnv, mb mailbox.Mailbox) {
		var flags string
		f := v.folderRow(t, mb.ID, "INBOX")
		if err := v.db.Gorm.Model(&messageRow{}).Where("folder_id = ? AND uid = ?", f.ID, 2).Pluck("flags", &flags).Error; err != nil {
			t.Fatal(err)
		}
		if flags != `\Seen` || f.HighestModseq != 50 {
			t.Errorf("after HIGHESTMODSEQ went from 100 to 50: uid 2 flags %q, folder modseq %d; want \\Seen (a full flag sweep) and 50", flags, f.HighestModseq)
		}
	},
	"FETCH of a UID never asked for": func(t *testing.T, v *testEnv, mb mailbox.Mailbox) {
		var n int64
		v.db.Gorm.Model(&messageRow{}).Where("mailbox_id = ? AND uid = ?", mb.ID, 99).Count(&n)
		if n != 0 {
			t.Errorf("the message with UID 99, never asked for, was stored")
		}
	},
	"UID 0 in SEARCH": func(t *testing.T, v *testEnv, mb mailbox.Mailbox) {
		var n int64
		v.db.Gorm.Model(&messageRow{}).Where("mailbox_id = ? AND uid = ?", mb.ID, 0).Count(&n)
		if n != 0 {
			t.Errorf("a message with UID 0 was stored")
		}
	},
	"NUL bytes in a message header": func(t *testing.T, v *testEnv, mb mailbox.Mailbox) {
		var subject string
		v.db.Gorm.Model(&messageRow{}).Where("mailbox_id = ? AND uid = ?", mb.ID, 1).Pluck("subject", &subject)
		if strings.ContainsRune(subject, 0) || subject == "" {
			t.Errorf("subject stored as %q; want it without NUL", subject)
		}
	},
	"BODY[] NIL": func(t *testing.T, v *testEnv, mb mailbox.Mailbox) {
		var q quarantineRow
		if err := v.db.Gorm.Where("mailbox_id = ? AND uid = ?", mb.ID, 1).Take(&q).Error; err != nil || !strings.Contains(q.LastError, "NIL") {
			t.Errorf("quarantine row of uid 1 = %+v, %v; want its failure (no body) recorded", q, err)
		}
	},
}

// hostileStep names the step of a sync error: the folder step, or the
// connection's step.
func hostileStep(err error) string {
	var se *stepError
	if errors.As(err, &se) {
		return se.Step
	}
	var ie *mailbox.IMAPError
	if errors.As(err, &ie) {
		return string(ie.Step)
	}
	return ""
}

// hostileMailboxes numbers the mailboxes insertHostileMailbox stores.
var hostileMailboxes int

// insertHostileMailbox stores a mailbox on the peer, with INBOX selected.
func (v *testEnv) insertHostileMailbox(t *testing.T, peer *testpeer.HostilePeer, security string) mailbox.Mailbox {
	t.Helper()
	hostileMailboxes++
	login := fmt.Sprintf("ann+%d@example.test", hostileMailboxes)
	return v.insertMailboxAs(t, login, peer.Host(), peer.Port(), outgoing.Security(security), login, hostilePassword)
}

// runUntilError runs the engine until the mailbox's state is error, then
// stops it. It runs inside a probe, off the test's goroutine: it returns
// what went wrong rather than failing the test.
func (v *testEnv) runUntilError(t *testing.T, id int64) error {
	w := newWatcher()
	w.attach(v.eng)
	stop := runEngine(t, v.eng)
	defer stop()
	deadline := time.NewTimer(2 * hostileTimeout)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		failed, ch := w.states[id] == StateError, w.changed
		w.mu.Unlock()
		if failed {
			return nil
		}
		select {
		case <-ch:
		case <-deadline.C:
			w.mu.Lock()
			defer w.mu.Unlock()
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			return fmt.Errorf("the mailbox's state did not become %q within %v (state %q, %d logins, pass errors %v)\n%s",
				StateError, 2*hostileTimeout, w.states[id], w.dials[id], w.passErrs, buf)
		}
	}
}

// TestReadGrowing: a body is read whole however it arrives, a short one is
// io.ErrUnexpectedEOF, and the buffer never runs ahead of the bytes by more
// than bodyChunk.
func TestReadGrowing(t *testing.T) {
	for _, n := range []int{0, 1, 1000, bodyChunk, bodyChunk + 1, 3*bodyChunk + 7} {
		body := bytes.Repeat([]byte("abcdefg"), n/7+1)[:n]
		got, err := readGrowing(iotest.OneByteReader(bytes.NewReader(body[:min(n, 10)])), int64(min(n, 10)), nil)
		if err != nil || !bytes.Equal(got, body[:min(n, 10)]) {
			t.Errorf("readGrowing(%d one byte at a time) = %d bytes, %v", min(n, 10), len(got), err)
		}
		got, err = readGrowing(bytes.NewReader(body), int64(n), nil)
		if err != nil || !bytes.Equal(got, body) || cap(got) != n {
			t.Errorf("readGrowing(%d) = %d bytes (cap %d), %v", n, len(got), cap(got), err)
		}
		if n == 0 {
			continue
		}
		got, err = readGrowing(bytes.NewReader(body[:n-1]), int64(n), nil)
		if !errors.Is(err, io.ErrUnexpectedEOF) || len(got) != n-1 {
			t.Errorf("readGrowing(%d of %d) = %d bytes, %v; want io.ErrUnexpectedEOF", n-1, n, len(got), err)
		}
		got, _ = readGrowing(bytes.NewReader(body[:min(n, 10)]), 1<<40, nil)
		if cap(got) > bodyChunk {
			t.Errorf("readGrowing of 10 bytes announced as 1 TiB allocated %d bytes", cap(got))
		}
	}
}

// TestReadGrowingIntoSpare: a spare buffer large enough is read into (no
// new buffer), one too small is not, and an empty body is still a body.
func TestReadGrowingIntoSpare(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 5000)
	spare := make([]byte, 0, 8192)
	got, err := readGrowing(bytes.NewReader(body), int64(len(body)), spare)
	if err != nil || !bytes.Equal(got, body) || &got[:1][0] != &spare[:1][0] {
		t.Errorf("into a spare of 8192: %d bytes, %v, same buffer %v", len(got), err, err == nil && &got[:1][0] == &spare[:1][0])
	}
	small := make([]byte, 0, 100)
	got, err = readGrowing(bytes.NewReader(body), int64(len(body)), small)
	if err != nil || !bytes.Equal(got, body) || &got[:1][0] == &small[:1][0] {
		t.Errorf("with a spare of 100: %d bytes, %v", len(got), err)
	}
	if got, err := readGrowing(bytes.NewReader(nil), 0, nil); err != nil || got == nil {
		t.Errorf("empty body = %v, %v; want an empty, non-nil body", got, err)
	}
}
