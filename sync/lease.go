package imapsync

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// ErrLeaseHeld means another holder has the mailbox's lease.
var ErrLeaseHeld = errors.New("another sync worker holds this mailbox")

// acquire takes the mailbox's lease when it is free: no row, owner ”, or
// past expires_at (its holder died or let go). One statement on both
// dialects: the conflict update runs only under its WHERE, and the row
// count says whether it did. PostgreSQL locks the row for the statement;
// SQLite runs it under the database's write lock.
func (e *Engine) acquire(ctx context.Context, mailboxID int64) (bool, error) {
	now := e.now()
	r := e.db.WithContext(ctx).Exec(`INSERT INTO sync_leases (mailbox_id, owner, expires_at, acquired_at, sync_requested)
		VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (mailbox_id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at, acquired_at = excluded.acquired_at
		WHERE sync_leases.owner = '' OR sync_leases.owner = excluded.owner OR sync_leases.expires_at < ?`,
		mailboxID, e.cfg.InstanceID, now.Add(e.cfg.LeaseTTL), now, false, now)
	if r.Error != nil {
		return false, fmt.Errorf("take the lease of mailbox %d: %w", mailboxID, r.Error)
	}
	return r.RowsAffected == 1, nil
}

// release gives a lease back, so that another instance may take the
// mailbox at once.
func (e *Engine) release(ctx context.Context, mailboxID int64) {
	err := e.db.WithContext(ctx).Model(&leaseRow{}).Where("mailbox_id = ? AND owner = ?", mailboxID, e.cfg.InstanceID).
		Updates(map[string]any{"owner": "", "expires_at": time.Unix(0, 0).UTC()}).Error
	if err != nil {
		e.log.Warn("release lease", "mailbox_id", mailboxID, "error", err)
	}
}

// heldLease is a lease this instance holds, as the database has it.
type heldLease struct {
	MailboxID     int64
	SyncRequested bool
}

// renew extends every lease this instance holds and returns them.
func (e *Engine) renew(ctx context.Context, now time.Time) ([]heldLease, error) {
	db := e.db.WithContext(ctx)
	if err := db.Model(&leaseRow{}).Where("owner = ? AND expires_at >= ?", e.cfg.InstanceID, now).
		Update("expires_at", now.Add(e.cfg.LeaseTTL)).Error; err != nil {
		return nil, fmt.Errorf("renew leases: %w", err)
	}
	var held []heldLease
	if err := e.db.WithContext(ctx).Model(&leaseRow{}).Select("mailbox_id", "sync_requested").
		Where("owner = ? AND expires_at >= ?", e.cfg.InstanceID, now).Find(&held).Error; err != nil {
		return nil, fmt.Errorf("read leases: %w", err)
	}
	return held, nil
}

// heartbeat records this instance as alive and returns how many instances
// are.
func (e *Engine) heartbeat(ctx context.Context, now time.Time) (int, error) {
	db := e.db.WithContext(ctx)
	if err := db.Exec(`INSERT INTO sync_instances (id, started_at, seen_at) VALUES (?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at`, e.cfg.InstanceID, now, now).Error; err != nil {
		return 0, fmt.Errorf("instance heartbeat: %w", err)
	}
	// Instances gone for long are forgotten.
	if err := e.db.WithContext(ctx).Exec(`DELETE FROM sync_instances WHERE seen_at < ?`, now.Add(-10*e.cfg.LeaseTTL)).Error; err != nil {
		return 0, fmt.Errorf("forget old instances: %w", err)
	}
	var n int64
	if err := e.db.WithContext(ctx).Table("sync_instances").Where("seen_at >= ?", now.Add(-e.cfg.LeaseTTL)).Count(&n).Error; err != nil {
		return 0, fmt.Errorf("count instances: %w", err)
	}
	return int(max(n, 1)), nil
}

// candidates returns the mailboxes that need a worker: a selected folder,
// no failed login, and no live lease; shuffled, so that instances starting
// together try different ones first. It also returns how many mailboxes
// need a worker in all.
func (e *Engine) candidates(ctx context.Context, now time.Time) (free []int64, total int, err error) {
	const eligible = `FROM mailboxes m WHERE m.auth_failed = ?
		AND EXISTS (SELECT 1 FROM mailbox_folders f WHERE f.mailbox_id = m.id AND f.selected = ? AND f.no_select = ?)`
	var n int64
	if err := e.db.WithContext(ctx).Raw(`SELECT COUNT(*) `+eligible, false, true, false).Scan(&n).Error; err != nil {
		return nil, 0, fmt.Errorf("count mailboxes: %w", err)
	}
	err = e.db.WithContext(ctx).Raw(`SELECT m.id `+eligible+`
		AND NOT EXISTS (SELECT 1 FROM sync_leases l WHERE l.mailbox_id = m.id AND l.owner <> '' AND l.expires_at >= ?)`,
		false, true, false, now).Scan(&free).Error
	if err != nil {
		return nil, 0, fmt.Errorf("find free mailboxes: %w", err)
	}
	rand.Shuffle(len(free), func(i, j int) { free[i], free[j] = free[j], free[i] })
	return free, int(n), nil
}

// share is how many mailboxes this instance should hold: an even split
// among the live instances, rounded up, within the configured cap.
func (e *Engine) share(total, instances int) int {
	n := (total + instances - 1) / max(instances, 1)
	if c := e.cfg.MaxMailboxesPerInstance; c > 0 && n > c {
		n = c
	}
	return n
}

// Run is the engine's worker loop: every LeaseTTL/3 (and at once when a
// mailbox changes) it renews its leases, stops the workers of leases it
// lost, gives back what exceeds its share and takes free mailboxes up to
// it, one worker goroutine each. When ctx ends it stops every worker,
// waits for them and gives their leases back.
func (e *Engine) Run(ctx context.Context) error {
	e.mu.Lock()
	if e.running {
		e.mu.Unlock()
		return errors.New("imapsync: Run called twice")
	}
	e.running = true
	e.mu.Unlock()
	e.log.Info("sync engine started", "instance", e.cfg.InstanceID, "lease_ttl", e.cfg.LeaseTTL,
		"poll_interval", e.cfg.PollInterval, "max_mailboxes", e.cfg.MaxMailboxesPerInstance)
	tick := time.NewTicker(e.cfg.LeaseTTL / 3)
	defer tick.Stop()
	for {
		e.tick(ctx)
		select {
		case <-ctx.Done():
			e.shutdown()
			return ctx.Err()
		case <-tick.C:
		case <-e.wake:
		}
	}
}

// tick is one round of the lease loop.
func (e *Engine) tick(ctx context.Context) {
	now := e.now()
	instances, err := e.heartbeat(ctx, now)
	if err == nil {
		err = e.keep(ctx, now)
	}
	if err != nil {
		if ctx.Err() == nil {
			e.log.Warn("sync lease round failed", "error", err)
			e.metrics.errors.WithLabelValues("lease").Inc()
		}
		e.stopExpired(now)
		return
	}
	free, total, err := e.candidates(ctx, now)
	if err != nil {
		if ctx.Err() == nil {
			e.log.Warn("sync lease round failed", "error", err)
			e.metrics.errors.WithLabelValues("lease").Inc()
		}
		return
	}
	want := e.share(total, instances)
	e.mu.Lock()
	held := len(e.workers)
	e.mu.Unlock()
	if held > want {
		e.giveBack(ctx, held-want)
		return
	}
	for _, id := range free {
		if held >= want || ctx.Err() != nil {
			break
		}
		ok, err := e.acquire(ctx, id)
		if err != nil {
			e.log.Warn("take lease", "mailbox_id", id, "error", err)
			continue
		}
		if !ok {
			continue
		}
		e.start(ctx, id, now.Add(e.cfg.LeaseTTL))
		held++
	}
	e.metrics.held.Set(float64(held))
}

// keep renews the leases, stops the workers whose lease is gone and those
// that ended by themselves, and passes on sync requests.
func (e *Engine) keep(ctx context.Context, now time.Time) error {
	held, err := e.renew(ctx, now)
	if err != nil {
		return err
	}
	have := make(map[int64]bool, len(held))
	var requested []int64
	for _, l := range held {
		have[l.MailboxID] = true
		if l.SyncRequested {
			requested = append(requested, l.MailboxID)
		}
	}
	e.mu.Lock()
	var lost, ended []*worker
	for id, w := range e.workers {
		switch {
		case w.finished():
			ended = append(ended, w)
			delete(e.workers, id)
		case !have[id]:
			lost = append(lost, w)
			delete(e.workers, id)
		default:
			w.leaseUntil.Store(now.Add(e.cfg.LeaseTTL).UnixNano())
		}
	}
	e.mu.Unlock()
	for _, w := range lost {
		e.log.Warn("sync lease lost; worker stopped", "mailbox_id", w.id)
		w.stop()
	}
	for _, w := range ended {
		w.stop()
		e.release(ctx, w.id)
	}
	// Leases whose worker ended by itself are not renewed above once
	// released; a lease renewed for a mailbox without a worker (a crash of
	// a worker between start and the map) is released here.
	e.mu.Lock()
	var orphans []int64
	for id := range have {
		if _, ok := e.workers[id]; !ok && !e.once[id] {
			orphans = append(orphans, id)
		}
	}
	e.mu.Unlock()
	for _, id := range orphans {
		e.release(ctx, id)
	}
	if len(requested) > 0 {
		if err := e.db.WithContext(ctx).Model(&leaseRow{}).Where("mailbox_id IN ? AND owner = ?", requested, e.cfg.InstanceID).
			Update("sync_requested", false).Error; err != nil {
			return fmt.Errorf("clear sync requests: %w", err)
		}
		e.mu.Lock()
		for _, id := range requested {
			if w := e.workers[id]; w != nil {
				w.poke(false)
			}
		}
		e.mu.Unlock()
	}
	return nil
}

// stopExpired stops the workers whose lease may have run out, when the
// database could not be reached to renew it: another instance may take the
// mailbox once it has, and two workers must not sync it together.
func (e *Engine) stopExpired(now time.Time) {
	margin := e.cfg.LeaseTTL / 3
	e.mu.Lock()
	var stop []*worker
	for id, w := range e.workers {
		if now.Add(margin).UnixNano() >= w.leaseUntil.Load() {
			stop = append(stop, w)
			delete(e.workers, id)
		}
	}
	e.mu.Unlock()
	for _, w := range stop {
		e.log.Warn("sync lease could not be renewed; worker stopped", "mailbox_id", w.id)
		w.stop()
	}
}

// giveBack stops n workers and releases their leases, for another
// instance to take.
func (e *Engine) giveBack(ctx context.Context, n int) {
	e.mu.Lock()
	var stop []*worker
	for id, w := range e.workers {
		if len(stop) == n {
			break
		}
		stop = append(stop, w)
		delete(e.workers, id)
	}
	e.mu.Unlock()
	for _, w := range stop {
		w.stop()
		e.release(ctx, w.id)
		e.log.Info("mailbox handed over to share the load", "mailbox_id", w.id)
	}
}

// shutdown stops every worker and releases the leases.
func (e *Engine) shutdown() {
	e.mu.Lock()
	ws := make([]*worker, 0, len(e.workers))
	for _, w := range e.workers {
		ws = append(ws, w)
	}
	e.workers = map[int64]*worker{}
	e.mu.Unlock()
	for _, w := range ws {
		w.cancel()
	}
	if e.abandon {
		for _, w := range ws {
			<-w.done
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, w := range ws {
		<-w.done
		e.release(ctx, w.id)
	}
	if err := e.db.WithContext(ctx).Exec(`DELETE FROM sync_instances WHERE id = ?`, e.cfg.InstanceID).Error; err != nil {
		e.log.Warn("remove instance row", "error", err)
	}
	e.metrics.held.Set(0)
	e.log.Info("sync engine stopped", "instance", e.cfg.InstanceID)
}
