package outgoing

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/store/storetest"
)

func gcMessage(i int, userID *int64, size int) *OutboxMessage {
	now := time.Now().UTC()
	return &OutboxMessage{
		MessageID: fmt.Sprintf("<gc-%d@example.com>", i), UserID: userID, RouteKind: KindSystem, RouteID: 1,
		FromAddr: "a@example.com", EnvelopeFrom: "a@example.com", Recipients: `["b@example.com"]`,
		Raw: make([]byte, size), Size: int64(size), Status: StatusQueued, NextAttemptAt: &now, CreatedAt: now, UpdatedAt: now,
	}
}

func gcCount(t *testing.T, db *store.DB) int64 {
	t.Helper()
	var n int64
	if err := db.Gorm.Model(&OutboxMessage{}).Count(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

// A row the database refuses (a user that does not exist) fails alone: the
// rest of its group is committed.
func TestGroupCommitIsolatesABadRow(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		g := NewService(Deps{DB: db}, Config{}).inserts // on SQLite, with its single-row writes
		missing := int64(9999)
		batch := []*groupReq{{m: gcMessage(1, nil, 10)}, {m: gcMessage(2, &missing, 10)}, {m: gcMessage(3, nil, 10)}}
		g.commit(context.Background(), batch)
		if batch[1].err == nil {
			t.Error("the row of a missing user was committed")
		}
		for _, i := range []int{0, 2} {
			if batch[i].err != nil || batch[i].m.ID == 0 {
				t.Errorf("row %d: err %v, id %d; want committed", i, batch[i].err, batch[i].m.ID)
			}
		}
		if n := gcCount(t, db); n != 2 {
			t.Errorf("rows = %d, want 2", n)
		}
	})
}

// Concurrent submissions each get their own outcome and a distinct id, and
// every good row is committed.
func TestGroupCommitConcurrent(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		g := NewService(Deps{DB: db}, Config{}).inserts // on SQLite, with its single-row writes
		const n = 200
		missing := int64(9999)
		ids := make([]int64, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				var uid *int64
				if i%50 == 7 {
					uid = &missing
				}
				m := gcMessage(i, uid, 100)
				errs[i] = g.insert(context.Background(), m)
				ids[i] = m.ID
			})
		}
		wg.Wait()
		seen := map[int64]bool{}
		bad := 0
		for i := range n {
			if i%50 == 7 {
				bad++
				if errs[i] == nil {
					t.Errorf("submission %d of a missing user: no error", i)
				}
				continue
			}
			if errs[i] != nil || ids[i] == 0 || seen[ids[i]] {
				t.Errorf("submission %d: err %v, id %d (seen before: %v)", i, errs[i], ids[i], seen[ids[i]])
			}
			seen[ids[i]] = true
		}
		if got := gcCount(t, db); got != int64(n-bad) {
			t.Errorf("rows = %d, want %d", got, n-bad)
		}
		if g.running || len(g.pending) != 0 {
			t.Errorf("after the last submission: running %v, %d pending", g.running, len(g.pending))
		}
	})
}

func TestGroupCommitTakeBounds(t *testing.T) {
	mk := func(sizes ...int) []*groupReq {
		var p []*groupReq
		for i, s := range sizes {
			p = append(p, &groupReq{m: gcMessage(i, nil, s)})
		}
		return p
	}
	p := mk(make([]int, 100)...)
	if b := take(&p); len(b) != maxGroupRows || len(p) != 100-maxGroupRows {
		t.Errorf("100 small rows: group of %d, %d left; want %d", len(b), len(p), maxGroupRows)
	}
	p = mk(maxGroupBytes/2, maxGroupBytes/2, 1)
	if b := take(&p); len(b) != 2 || len(p) != 1 {
		t.Errorf("two half-limit rows and one more: group of %d, %d left; want 2, 1", len(b), len(p))
	}
	p = mk(maxGroupBytes+1, 1)
	if b := take(&p); len(b) != 1 || len(p) != 1 {
		t.Errorf("an oversized row: group of %d, %d left; want 1, 1", len(b), len(p))
	}
}

// Every committed row has its own body: on PostgreSQL the ids are taken
// ahead from the sequence (pgwrite.go), in blocks that several groups use
// up here, and each body must land under its own message's id.
func TestGroupCommitBodiesFollowTheirRows(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		s := NewService(Deps{DB: db}, Config{})
		const n = 2*pgIDBlock + 10
		for start := 0; start < n; start += maxGroupRows {
			var batch []*groupReq
			for i := start; i < min(start+maxGroupRows, n); i++ {
				m := gcMessage(i, nil, 0)
				m.Raw = []byte(fmt.Sprintf("Subject: %d\r\n\r\nbody of message %d\r\n", i, i))
				batch = append(batch, &groupReq{m: m})
			}
			s.inserts.commit(context.Background(), batch)
			for _, r := range batch {
				if r.err != nil {
					t.Fatalf("%s: %v", r.m.MessageID, r.err)
				}
				raw, err := s.Raw(context.Background(), Caller{Admin: true}, r.m.ID)
				if err != nil {
					t.Fatalf("%s: %v", r.m.MessageID, err)
				}
				if string(raw) != string(r.m.Raw) {
					t.Errorf("message %d (%s) has the body %q", r.m.ID, r.m.MessageID, raw)
				}
			}
		}
		if got := gcCount(t, db); got != n {
			t.Errorf("rows = %d, want %d", got, n)
		}
	})
}

// On PostgreSQL, ids are taken from the sequence ahead of the inserts, in
// blocks, or all at once when more are wanted than a block: each id once.
func TestPGTakeIDs(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		pg := NewService(Deps{DB: db}, Config{}).inserts.pg
		if db.Dialect != store.Postgres {
			if pg != nil {
				t.Fatal("ids taken ahead on SQLite")
			}
			return
		}
		seen := map[int64]bool{}
		for _, n := range []int{1, pgIDBlock - 1, pgIDBlock + 7, 3} {
			ids, err := pg.takeIDs(context.Background(), db, n)
			if err != nil {
				t.Fatal(err)
			}
			if len(ids) != n {
				t.Fatalf("asked for %d ids, got %d", n, len(ids))
			}
			for _, id := range ids {
				if id <= 0 || seen[id] {
					t.Fatalf("id %d given twice or not positive", id)
				}
				seen[id] = true
			}
		}
	})
}
