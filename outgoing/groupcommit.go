package outgoing

import (
	"context"
	"fmt"
	"sync"

	"github.com/mailsync/mailsync/internal/store"
	"gorm.io/gorm"
)

// Bounds of one group commit: rows, and bytes of raw messages, per INSERT.
const (
	maxGroupRows  = 64
	maxGroupBytes = 8 << 20
)

// groupCommit queues messages with one transaction for all the submissions
// that arrive while the previous transaction runs: under load, one commit
// (and, on SQLite, one turn at the single write lock) for many messages
// instead of one each, with no added wait when there is no load. Each
// caller returns only once its own row is committed.
//
// There is no background goroutine: the first caller to find no commit
// running leads; when its own commit is done and more submissions are
// waiting, it hands the lead to one of them and returns.
type groupCommit struct {
	db     *store.DB
	sqlite *sqliteWrites // nil: multi-row statements
	pg     *pgInserts    // PostgreSQL: one statement per group (pgwrite.go)

	mu      sync.Mutex
	pending []*groupReq
	running bool
}

type groupReq struct {
	m    *OutboxMessage
	err  error            // the commit's outcome, set by the leader
	done chan groupResult // buffered: 1
}

type groupResult struct {
	err  error
	lead bool // no error yet: this caller now leads the next commit
}

// insert commits m (its ID is set) together with whatever else is waiting.
func (g *groupCommit) insert(ctx context.Context, m *OutboxMessage) error {
	req := &groupReq{m: m, done: make(chan groupResult, 1)}
	g.mu.Lock()
	g.pending = append(g.pending, req)
	if g.running {
		g.mu.Unlock()
		r := <-req.done
		if !r.lead {
			return r.err
		}
	} else {
		g.running = true
		g.mu.Unlock()
	}
	// Leading: commit what is pending, in groups, until this caller's own
	// row is in; then pass the lead on.
	for {
		g.mu.Lock()
		batch := take(&g.pending)
		g.mu.Unlock()
		g.commit(context.WithoutCancel(ctx), batch)
		var mine error
		own := false
		for _, r := range batch {
			if r == req {
				own = true
				mine = r.err
				continue
			}
			r.done <- groupResult{err: r.err}
		}
		if !own {
			continue // the groups ahead of this caller's were full
		}
		g.mu.Lock()
		if len(g.pending) == 0 {
			g.running = false
		} else {
			g.pending[0].done <- groupResult{lead: true}
		}
		g.mu.Unlock()
		return mine
	}
}

// take removes and returns the first group of pending requests within the
// bounds (at least one).
func take(pending *[]*groupReq) []*groupReq {
	p := *pending
	n, size := 0, 0
	for n < len(p) && n < maxGroupRows && (n == 0 || size+len(p[n].m.Raw) <= maxGroupBytes) {
		size += len(p[n].m.Raw)
		n++
	}
	batch := p[:n:n]
	*pending = p[n:]
	return batch
}

// commit inserts a group in one transaction: one statement for the status
// rows, one for the bodies. When that fails, each message on its own, so
// that one bad row does not cost the others. Each request's outcome lands
// in its err.
func (g *groupCommit) commit(ctx context.Context, batch []*groupReq) {
	rows := make([]*OutboxMessage, len(batch))
	for i, r := range batch {
		rows[i] = r.m
	}
	err := g.write(ctx, rows)
	if err == nil || len(rows) == 1 {
		for _, r := range batch {
			r.err = err
		}
		return
	}
	for _, r := range batch { // write reset their ids when the group failed
		if err := g.write(ctx, []*OutboxMessage{r.m}); err != nil {
			r.err = fmt.Errorf("insert on its own after the group failed: %w", err)
		}
	}
}

// write inserts rows and their bodies in one transaction. On PostgreSQL
// that is one statement (pgwrite.go). SQLite has no round trips, and
// multi-row statements cost it a statement journal (sqlitewrite.go): there
// each row is a single-row INSERT.
func (g *groupCommit) write(ctx context.Context, rows []*OutboxMessage) error {
	var err error
	if g.pg != nil {
		err = g.pg.write(ctx, g.db, rows)
	} else {
		err = g.writeTx(ctx, rows)
	}
	if err != nil {
		for _, m := range rows {
			m.ID = 0
		}
	}
	return err
}

// writeTx inserts rows and their bodies in one transaction.
func (g *groupCommit) writeTx(ctx context.Context, rows []*OutboxMessage) error {
	return g.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if si := g.sqlite; si != nil {
			for _, m := range rows {
				if err := si.outbox.insert(tx, m); err != nil {
					return err
				}
				b := newOutboxBody(m)
				if err := si.body.insert(tx, &b); err != nil {
					return err
				}
			}
			return nil
		}
		if err := tx.Create(rows).Error; err != nil {
			return err
		}
		bodies := make([]outboxBody, len(rows))
		for i, m := range rows {
			bodies[i] = newOutboxBody(m)
		}
		return tx.Create(&bodies).Error
	})
}
