package imapsync

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/mailbox"
)

// Mailbox sync states (mailboxes.sync_state).
const (
	StatePending    = "pending"     // connected, not synced yet
	StateSyncing    = "syncing"     // a pass is running
	StateIdle       = "idle"        // in sync; waiting in IDLE or for the next poll
	StateAuthFailed = "auth_failed" // the server refused the login; retried after the settings change
	StateError      = "error"       // the last pass failed; retried with backoff
)

// worker syncs one mailbox while this instance holds its lease. It owns
// the mailbox's one IMAP connection.
type worker struct {
	e          *Engine
	id         int64
	cancel     context.CancelFunc
	done       chan struct{}
	wake       chan bool // a pass now; true: reread the mailbox (settings may have changed)
	leaseUntil atomic.Int64
	ended      atomic.Bool // run returned by itself (auth failed, mailbox gone)
}

// start runs a worker for a mailbox whose lease was just taken.
func (e *Engine) start(ctx context.Context, id int64, leaseUntil time.Time) {
	wctx, cancel := context.WithCancel(ctx)
	w := &worker{e: e, id: id, cancel: cancel, done: make(chan struct{}), wake: make(chan bool, 1)}
	w.leaseUntil.Store(leaseUntil.UnixNano())
	e.mu.Lock()
	e.workers[id] = w
	e.mu.Unlock()
	go func() {
		defer close(w.done)
		w.run(wctx)
	}()
	go w.fence(wctx)
}

// fence stops the worker by itself when its lease is about to run out
// without having been renewed (the lease loop is late or the database is
// unreachable), so that it never syncs past the moment another instance
// may take the mailbox. The lease loop then releases the lease, or takes it
// again.
func (w *worker) fence(ctx context.Context) {
	ttl := w.e.cfg.LeaseTTL
	tick := time.NewTicker(ttl / 6)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if time.Now().Add(ttl/6).UnixNano() >= w.leaseUntil.Load() {
				w.e.log.Warn("sync lease not renewed in time; worker stopped", "mailbox_id", w.id)
				w.ended.Store(true)
				w.cancel()
				w.e.kick()
				return
			}
		}
	}
}

// poke asks for a pass; reload also makes the worker reread the mailbox
// and reconnect when its settings changed.
func (w *worker) poke(reload bool) {
	for {
		select {
		case w.wake <- reload:
			return
		default:
		}
		// Merge with the pending request.
		select {
		case old := <-w.wake:
			reload = reload || old
		default:
		}
	}
}

func (w *worker) finished() bool { return w.ended.Load() }

// stop cancels the worker and waits for it.
func (w *worker) stop() {
	w.cancel()
	<-w.done
}

// errSettingsChanged ends a session so that the next one uses new settings.
var errSettingsChanged = errors.New("the mailbox's settings changed")

// run connects, syncs and waits for changes until ctx ends, reconnecting
// with exponential backoff and jitter after a failure. A refused login
// marks the mailbox auth_failed and ends the worker: the engine takes the
// mailbox again once its settings change (mailbox.Service.Update clears
// auth_failed).
func (w *worker) run(ctx context.Context) {
	e := w.e
	backoff := e.cfg.BackoffMin
	for ctx.Err() == nil {
		mb, err := e.mbs.ByID(ctx, w.id)
		if err != nil {
			if isNotFound(err) {
				w.ended.Store(true)
				e.kick()
				return
			}
			if ctx.Err() != nil {
				return
			}
			e.log.Warn("read mailbox", "mailbox_id", w.id, "error", err)
		} else if mb.AuthFailed {
			w.ended.Store(true)
			e.kick()
			return
		} else {
			synced, err := w.session(ctx, mb)
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, errSettingsChanged) {
				backoff = e.cfg.BackoffMin
				continue
			}
			if isAuthFailure(err) {
				w.authFailed(ctx, mb, err)
				w.ended.Store(true)
				e.kick()
				return
			}
			if synced {
				backoff = e.cfg.BackoffMin
			}
			e.count.errors.Add(1)
			var se *stepError
			step := stepConnect
			if errors.As(err, &se) {
				step = se.Step
			}
			e.metrics.errors.WithLabelValues(step).Inc()
			e.log.Warn("mailbox sync failed; reconnecting", "mailbox_id", w.id, "error", err, "retry_in", backoff)
			e.setStatus(ctx, w.id, StateError, true, err)
		}
		// Full jitter on the upper half: [backoff/2, backoff).
		delay := backoff/2 + rand.N(backoff/2+1)
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-w.wake:
			timer.Stop()
		case <-timer.C:
		}
		backoff = min(2*backoff, e.cfg.BackoffMax)
	}
}

// session is one connection's life: a full pass, then IDLE on INBOX (or a
// wait), a pass of INBOX on each hint, a full pass on each poll tick or
// request. It returns why it ended, and whether any pass succeeded.
func (w *worker) session(ctx context.Context, mb mailbox.Mailbox) (synced bool, err error) {
	e := w.e
	e.setStatus(ctx, w.id, StateSyncing, false, nil)
	s, err := e.dial(ctx, mb)
	if err != nil {
		return false, err
	}
	defer s.close()
	e.count.dials.Add(1)
	if h := e.hooks.dialed; h != nil {
		h(w.id)
	}
	inboxSelected, err := w.hasInbox(ctx)
	if err != nil {
		return false, err
	}

	var poll <-chan time.Time
	var pollTimer *time.Timer
	if e.cfg.PollInterval > 0 {
		pollTimer = time.NewTimer(e.cfg.PollInterval)
		defer pollTimer.Stop()
		poll = pollTimer.C
	}
	only := "" // "" = every folder
	for {
		if only == "" {
			e.setStatus(ctx, w.id, StateSyncing, false, nil)
		}
		_, err := e.pass(ctx, s, mb, only)
		if h := e.hooks.passDone; h != nil {
			h(w.id, err)
		}
		if err != nil && !folderOnly(err) {
			return synced, err
		}
		synced = true
		e.count.passes.Add(1)
		e.setStatus(ctx, w.id, StateIdle, true, err)
		if only == "" && pollTimer != nil {
			pollTimer.Reset(e.cfg.PollInterval)
		}

		only, err = w.wait(ctx, s, mb, inboxSelected, poll)
		if err != nil {
			return synced, err
		}
		if only == "reload" {
			fresh, err := e.mbs.ByID(ctx, w.id)
			if err != nil {
				return synced, err
			}
			if fresh.SettingsVersion != mb.SettingsVersion || fresh.AuthFailed {
				return synced, errSettingsChanged
			}
			mb = fresh
			if inboxSelected, err = w.hasInbox(ctx); err != nil {
				return synced, err
			}
			only = ""
		}
	}
}

// wait blocks until there is something to sync: "INBOX" after a hint from
// the server, "" for a full pass (poll tick or request), "reload" when
// the mailbox changed. With IDLE and INBOX selected it waits in IDLE on
// INBOX (the pass ended there), ending IDLE every IdleRestart to keep the
// connection checked and under the 29-minute limit.
func (w *worker) wait(ctx context.Context, s *session, mb mailbox.Mailbox, inboxSelected bool, poll <-chan time.Time) (string, error) {
	e := w.e
	select {
	case <-s.hints:
		if inboxSelected {
			return inboxName(s), nil
		}
	default:
	}
	if !s.idle || !inboxSelected {
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case reload := <-w.wake:
			if reload {
				return "reload", nil
			}
			return "", nil
		case <-poll:
			return "", nil
		case <-s.hints:
			return "", nil
		}
	}
	for {
		if sel := s.c.Mailbox(); sel == nil || !isInbox(sel.Name) {
			if _, err := s.selectFolder("INBOX"); err != nil {
				return "", err
			}
		}
		var idle interface {
			Close() error
			Wait() error
		}
		err := s.guard(func() error {
			cmd, err := s.c.Idle()
			if err == nil {
				idle = cmd
			}
			return err
		})
		if err != nil {
			return "", &stepError{Step: stepIdle, Folder: "INBOX", Err: err}
		}
		e.metrics.idle.Inc()
		restart := time.NewTimer(e.cfg.IdleRestart)
		result, again := "", false
		select {
		case <-ctx.Done():
		case reload := <-w.wake:
			if reload {
				result = "reload"
			}
		case <-poll:
		case <-s.hints:
			result = "INBOX"
		case <-restart.C:
			again = true
		case <-s.c.Closed():
		}
		restart.Stop()
		e.metrics.idle.Dec()
		err = s.guard(func() error {
			if err := idle.Close(); err != nil {
				return err
			}
			return idle.Wait()
		})
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		if err != nil {
			return "", &stepError{Step: stepIdle, Folder: "INBOX", Err: err}
		}
		if !again {
			return result, nil
		}
	}
}

// inboxName is INBOX as selected (the name is case-insensitive).
func inboxName(*session) string { return "INBOX" }

// hasInbox reports whether INBOX is among the mailbox's selected folders.
func (w *worker) hasInbox(ctx context.Context) (bool, error) {
	var n int64
	err := w.e.db.WithContext(ctx).Model(&mailbox.FolderRow{}).
		Where("mailbox_id = ? AND selected = ? AND upper(name) = ?", w.id, true, "INBOX").Count(&n).Error
	return n > 0, err
}

// authFailed marks the mailbox auth_failed, unless its settings changed
// since it was read (the new ones deserve a try).
func (w *worker) authFailed(ctx context.Context, mb mailbox.Mailbox, err error) {
	e := w.e
	e.metrics.errors.WithLabelValues("login").Inc()
	e.log.Warn("IMAP login refused; the mailbox waits for new settings", "mailbox_id", mb.ID, "error", err)
	now := e.now()
	if dbErr := e.db.WithContext(ctx).Model(&mailbox.Mailbox{}).
		Where("id = ? AND settings_version = ?", mb.ID, mb.SettingsVersion).
		Updates(map[string]any{"auth_failed": true, "sync_state": StateAuthFailed, "last_sync_at": now,
			"last_sync_ok": false, "last_error": clean(err.Error(), 1000)}).Error; dbErr != nil {
		e.log.Warn("mark mailbox auth_failed", "mailbox_id", mb.ID, "error", dbErr)
	}
	if h := e.hooks.state; h != nil {
		h(mb.ID, StateAuthFailed)
	}
}

// setStatus records the mailbox's state; with done, also the end of a pass
// (last_sync_at, last_sync_ok, last_error).
func (e *Engine) setStatus(ctx context.Context, id int64, state string, done bool, err error) {
	upd := map[string]any{"sync_state": state}
	if done {
		upd["last_sync_at"] = e.now()
		upd["last_sync_ok"] = err == nil
		upd["last_error"] = ""
		if err != nil {
			upd["last_error"] = clean(err.Error(), 1000)
		}
	}
	if dbErr := e.db.WithContext(ctx).Model(&mailbox.Mailbox{}).Where("id = ? AND auth_failed = ?", id, false).
		Updates(upd).Error; dbErr != nil && ctx.Err() == nil {
		e.log.Warn("record sync status", "mailbox_id", id, "error", dbErr)
	}
	if h := e.hooks.state; h != nil {
		h(id, state)
	}
}

// isAuthFailure reports whether err is the server refusing the login (as
// opposed to a network or server failure worth retrying).
func isAuthFailure(err error) bool {
	var ie *mailbox.IMAPError
	if !errors.As(err, &ie) || ie.Step != mailbox.StepLogin {
		return false
	}
	if ie.Reply == nil {
		return errors.Is(err, mailbox.ErrLoginDisabled)
	}
	return !ie.Temporary()
}

// folderOnly reports whether err concerns one folder only (the server
// refused to open it), so the pass goes on with the others.
func folderOnly(err error) bool {
	var se *stepError
	var ie *imap.Error
	return errors.As(err, &se) && se.Step == stepSelect && errors.As(err, &ie)
}

func isInbox(name string) bool { return strings.EqualFold(name, "INBOX") }

func isNotFound(err error) bool {
	return store.IsNotFound(err) || errors.Is(err, apperr.ErrNotFound)
}
