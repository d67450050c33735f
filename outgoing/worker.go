package outgoing

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/store"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// Retry timing: the delay starts at retryBase and doubles up to retryMax,
// with ±20 % jitter so that many messages do not come back at once.
const (
	retryBase = time.Minute
	retryMax  = time.Hour
)

// ErrAuthFailed marks a sender whose login the server refused: its messages
// wait, and nothing dials it again, until its settings change.
var ErrAuthFailed = errors.New("the server refused this sender's login; change its settings to retry")

// Worker sends the outbox's due messages. One Worker per process; several
// processes share the outbox through leases.
type Worker struct {
	s     *Service
	owner string
	pool  *connPool
}

// NewWorker returns a worker with a unique lease owner name.
func (s *Service) NewWorker() *Worker {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = crand.Read(b)
	return &Worker{
		s:     s,
		owner: fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b)),
		pool:  newConnPool(s.cfg.ConnMaxReuse),
	}
}

// Name names the worker in logs.
func (w *Worker) Name() string { return "outbox" }

// Run sends due messages until ctx ends, then lets the messages in flight
// finish (each bounded by the send timeout) and closes its connections.
//
// Messages come from two places: the database, by claims, and, for the
// messages this instance accepts while Run runs, straight from the
// submission in memory (handoff.go). The database is asked when it may
// have something: at the start, when a submission could not be handed
// over (the service wakes the worker), after a claim that found messages,
// and every PollInterval for retries that came due.
//
// While one round's messages are on the wire, Run already claims the next
// round's from the database when it may have some, so that the
// connections do not wait for the claim between rounds; those wait,
// leased, until this round ends. When Run stops, the messages it holds and
// has not started (claimed ahead or handed over) go back to the queue,
// unsent.
func (w *Worker) Run(ctx context.Context) error {
	defer w.pool.closeAll()
	stopLeases := w.keepLeases(ctx)
	defer stopLeases()
	var (
		h           *handoff
		handed      <-chan OutboxMessage // h.ch, or nil: no handoff
		stopHandoff = func() bool { return false }
		released    = make(chan struct{})
	)
	// closeHandoff sends submissions to the queue from now on, and what
	// was handed over and not taken back to it.
	closeHandoff := func() {
		w.s.handoff.CompareAndSwap(h, nil)
		w.releaseAll(h.close())
	}
	if nh := newHandoff(w.owner); w.s.handoff.CompareAndSwap(nil, nh) {
		h, handed = nh, nh.ch
		// At the cancel, not after the round on the wire, which may take
		// up to the send timeout.
		stopHandoff = context.AfterFunc(ctx, func() {
			defer close(released)
			closeHandoff()
		})
	}
	var ahead []OutboxMessage
	defer func() {
		if h != nil {
			if stopHandoff() { // the cancel's func did not start: do its work
				closeHandoff()
			} else {
				<-released
			}
		}
		w.releaseAll(ahead)
		// A row committed leased to this worker that never reached it (an
		// insert that reported an error after all) goes back to the queue.
		w.releaseUntried()
	}()
	var (
		first    *OutboxMessage // received from handed while idle
		askDB    = true         // the database may have due messages
		lastPoll = time.Now()
	)
	batch := w.s.cfg.BatchSize
	for {
		msgs := ahead
		claimedAhead := ahead != nil
		ahead = nil
		if h != nil {
			msgs = append(msgs, w.unpack(h.take(batch-len(msgs), first))...)
			first = nil
		}
		select {
		case <-w.s.wake:
			askDB = true
		default:
		}
		if time.Since(lastPoll) >= w.s.cfg.PollInterval {
			askDB = true
		}
		var err error
		if askDB && !claimedAhead && len(msgs) < batch {
			var claimed []OutboxMessage
			var found int
			claimed, found, err = w.claim(ctx, batch-len(msgs))
			lastPoll = time.Now()
			askDB = found > 0 || err != nil
			msgs = append(msgs, claimed...)
		}
		if len(msgs) > 0 {
			if ctx.Err() != nil {
				ahead = msgs // released by the deferred func
				return nil
			}
			sent := make(chan struct{})
			go func() {
				defer close(sent)
				w.sendRound(ctx, msgs)
			}()
			if askDB && ctx.Err() == nil {
				// Handed-over messages waiting get at least half of the
				// next round: a stream of submissions that overflow into
				// the queue does not keep them waiting.
				limit := batch
				if handed != nil {
					limit -= min(len(handed), batch/2)
				}
				var found int
				ahead, found, err = w.claim(ctx, limit)
				lastPoll = time.Now()
				askDB = found > 0 || err != nil
				if len(ahead) == 0 {
					ahead = nil
				}
			}
			<-sent
		}
		if err != nil && ctx.Err() == nil {
			w.s.log.ErrorContext(ctx, "outbox round failed", "error", err)
		}
		if ctx.Err() != nil {
			return nil
		}
		if err == nil && (len(msgs) > 0 || ahead != nil) {
			continue // more may be due right now
		}
		timer := time.NewTimer(w.s.cfg.PollInterval)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-w.s.wake:
			askDB = true
		case <-timer.C:
			askDB = true
		case m := <-handed:
			first = &m
		}
		timer.Stop()
	}
}

// unpack decodes the stored bodies of messages handed over in memory and
// counts their attempt, which their row gets with the outcome. A
// body that does not decode (which would be a bug: it was encoded in this
// process) sends its message back to the queue, where a claim fails it
// with the reason.
func (w *Worker) unpack(msgs []OutboxMessage) []OutboxMessage {
	out := msgs[:0]
	for _, m := range msgs {
		raw, err := decodeBody(m.stored, m.codec)
		if err != nil {
			w.s.log.Error("decode a handed-over message", "outbox_id", m.ID, "error", err)
			w.release(m)
			continue
		}
		m.Raw, m.stored = raw, nil
		m.Attempts++ // written with the outcome (finish)
		out = append(out, m)
	}
	return out
}

// ProcessDue claims the due messages (up to the batch size), sends them and
// records the outcomes. It returns how many it claimed. Cancelling ctx stops
// it from starting more sends; those it started finish.
func (w *Worker) ProcessDue(ctx context.Context) (int, error) {
	msgs, _, err := w.claim(ctx, w.s.cfg.BatchSize)
	if err != nil || len(msgs) == 0 {
		return 0, err
	}
	stop := w.keepLeases(ctx)
	defer stop()
	w.sendRound(ctx, msgs)
	return len(msgs), nil
}

// sendRound sends claimed messages, each route's over its own connections,
// and returns once every outcome is recorded.
func (w *Worker) sendRound(ctx context.Context, msgs []OutboxMessage) {
	type key struct {
		kind string
		id   int64
	}
	groups := map[key][]OutboxMessage{}
	var order []key
	for _, m := range msgs {
		k := key{m.RouteKind, m.RouteID}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], m)
	}
	rec := w.startRecorder(ctx, len(msgs))
	var wg sync.WaitGroup
	for _, k := range order {
		wg.Go(func() { w.sendRoute(ctx, rec, k.kind, k.id, groups[k]) })
	}
	wg.Wait()
	rec.close() // every outcome is written before the leases stop being renewed
}

// maxClaimBytes bounds the raw bytes of the messages one round claims, and
// so holds in memory.
const maxClaimBytes = 32 << 20

// claim takes up to limit due messages: queued or unknown ones whose time
// has come, and first turns the ones whose lease ran out (their worker died
// mid-send) into unknown, since they may have been delivered. It returns
// them and how many due messages it found (some of which may have failed
// at once: their stored body could not be read).
func (w *Worker) claim(ctx context.Context, limit int) ([]OutboxMessage, int, error) {
	s := w.s
	now := s.now()
	var (
		msgs  []OutboxMessage
		found int
		dead  []LogEntry // messages failed for an unreadable body, logged after the commit
	)
	// Not cancelled with ctx: a claim whose commit reached the database
	// but whose reply was cut short by the cancel would leave its messages
	// leased and unsent, with nobody holding them, until the lease ran out.
	err := s.db.WithContext(context.WithoutCancel(ctx)).Transaction(func(tx *gorm.DB) error {
		msgs, found, dead = nil, 0, nil
		if err := w.expireLeases(tx, now); err != nil {
			return err
		}
		q := tx.Model(&OutboxMessage{}).
			Where("status IN ? AND next_attempt_at IS NOT NULL AND next_attempt_at <= ?",
				[]string{StatusQueued, StatusUnknown}, now).
			Order("next_attempt_at, id").Limit(max(limit, 1))
		if s.db.Dialect == store.Postgres {
			q = q.Clauses(clause.Locking{Strength: "UPDATE", Options: "SKIP LOCKED"})
		}
		var due []struct {
			ID   int64
			Size int64
		}
		if err := q.Select("id", "size").Find(&due).Error; err != nil {
			return fmt.Errorf("find due messages: %w", err)
		}
		found = len(due)
		if len(due) == 0 {
			return nil
		}
		// A round holds its messages in memory: bound it by bytes too (the
		// first message always fits).
		var ids []int64
		total := int64(0)
		for _, d := range due {
			if len(ids) > 0 && total+d.Size > maxClaimBytes {
				break
			}
			ids = append(ids, d.ID)
			total += d.Size
		}
		lease := map[string]any{
			"status": StatusSending, "lease_owner": w.owner, "lease_until": now.Add(s.cfg.LeaseTTL),
			"attempts": gorm.Expr("attempts + 1"), "updated_at": now,
		}
		if si := s.sqlite; si != nil { // one row per statement: sqlitewrite.go
			for _, id := range ids {
				if _, err := si.updateRow(tx, id, "", lease); err != nil {
					return fmt.Errorf("lease message: %w", err)
				}
			}
		} else if err := tx.Model(&OutboxMessage{}).Where("id IN ?", ids).Updates(lease).Error; err != nil {
			return fmt.Errorf("lease messages: %w", err)
		}
		if err := tx.Where("id IN ?", ids).Order("id").Find(&msgs).Error; err != nil {
			return err
		}
		var bodies []outboxBody
		if err := tx.Where("outbox_id IN ?", ids).Find(&bodies).Error; err != nil {
			return fmt.Errorf("read message bodies: %w", err)
		}
		raw := make(map[int64][]byte, len(bodies))
		unreadable := map[int64]error{}
		for _, b := range bodies {
			r, err := decodeBody(b.Raw, b.Codec)
			if err != nil {
				unreadable[b.OutboxID] = err
				continue
			}
			raw[b.OutboxID] = r
		}
		readable := msgs[:0]
		for _, m := range msgs {
			r, ok := raw[m.ID]
			if !ok {
				err := unreadable[m.ID]
				if err == nil {
					err = errors.New("its body is missing")
				}
				// Nothing can send it: failed now, not retried forever.
				reason := cleanText("the stored message could not be read: " + err.Error())
				err = tx.Model(&OutboxMessage{}).Where("id = ?", m.ID).Updates(map[string]any{
					"status": StatusFailed, "lease_owner": "", "lease_until": nil, "next_attempt_at": nil,
					"last_error": reason, "updated_at": now,
				}).Error
				if err != nil {
					return fmt.Errorf("fail message %d: %w", m.ID, err)
				}
				entry := logEntry(now, m, "", LogFailed, nil, errors.New(reason), 0)
				if err := tx.Create(&entry).Error; err != nil {
					return fmt.Errorf("log message %d: %w", m.ID, err)
				}
				dead = append(dead, entry)
				continue
			}
			m.Raw = r
			readable = append(readable, m)
		}
		msgs = readable
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("claim: %w", err)
	}
	for _, e := range dead {
		s.metrics.attempts.WithLabelValues(LogFailed).Inc()
		s.log.Error("stored message unreadable: failed", "outbox_id", e.OutboxID, "message_id", e.MessageID, "reason", e.Reply)
	}
	return msgs, found, nil
}

func (w *Worker) expireLeases(tx *gorm.DB, now time.Time) error {
	s := w.s
	var lost []OutboxMessage
	if err := tx.Where("status = ? AND lease_until < ?", StatusSending, now).Find(&lost).Error; err != nil {
		return fmt.Errorf("find expired leases: %w", err)
	}
	for _, m := range lost {
		if m.Attempts == 0 {
			// Handed over in memory (handoff.go) and never tried: its
			// worker stopped before it got to it. Back in the queue, as
			// any message that was not sent.
			err := tx.Model(&OutboxMessage{}).Where("id = ?", m.ID).Updates(map[string]any{
				"status": StatusQueued, "lease_owner": "", "lease_until": nil, "next_attempt_at": now, "updated_at": now,
			}).Error
			if err != nil {
				return fmt.Errorf("requeue message %d: %w", m.ID, err)
			}
			s.log.Warn("message lease expired before its first attempt; queued again", "outbox_id", m.ID,
				"message_id", m.MessageID, "holder", m.LeaseOwner)
			continue
		}
		m.UnknownCount++
		upd := map[string]any{
			"status": StatusUnknown, "unknown_count": m.UnknownCount, "lease_owner": "", "lease_until": nil,
			"last_error": "the worker sending this message stopped; it may have been delivered", "updated_at": now,
			"next_attempt_at": nil,
		}
		if m.UnknownCount <= s.cfg.MaxUnknownRetries {
			upd["next_attempt_at"] = now
		}
		if err := tx.Model(&OutboxMessage{}).Where("id = ?", m.ID).Updates(upd).Error; err != nil {
			return fmt.Errorf("expire lease of message %d: %w", m.ID, err)
		}
		entry := logEntry(now, m, "", LogUnknown, nil, nil, 0)
		entry.Reply = "lease expired: the worker stopped while sending"
		if err := tx.Create(&entry).Error; err != nil {
			return err
		}
		s.metrics.unknown.Inc()
		s.log.Warn("message lease expired; it will be resent", "outbox_id", m.ID, "message_id", m.MessageID, "holder", m.LeaseOwner)
	}
	return nil
}

// keepLeases renews this worker's leases until stop is called, so that a
// long batch is not taken over by another instance.
func (w *Worker) keepLeases(ctx context.Context) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(w.s.cfg.LeaseTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				now := w.s.now()
				err := w.s.db.WithContext(context.WithoutCancel(ctx)).Model(&OutboxMessage{}).
					Where("status = ? AND lease_owner = ?", StatusSending, w.owner).
					Update("lease_until", now.Add(w.s.cfg.LeaseTTL)).Error
				if err != nil {
					w.s.log.Warn("renew outbox leases", "error", err)
				}
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// sendRoute sends one route's messages over at most MaxConnsPerRoute
// connections.
func (w *Worker) sendRoute(ctx context.Context, rec *recorder, kind string, id int64, msgs []OutboxMessage) {
	s := w.s
	tgt, err := s.target(ctx, kind, id)
	if err != nil && ctx.Err() != nil {
		// Stopping before the round went out: nothing was tried.
		w.releaseAll(msgs)
		return
	}
	if err != nil {
		for _, m := range msgs {
			switch {
			case errors.Is(err, ErrAuthFailed):
				w.finish(rec, m, tgt, attempt{err: &StepError{Step: StepAuth, Err: err}, hold: true})
			case errors.Is(err, apperr.ErrNotFound):
				w.finish(rec, m, tgt, attempt{err: err, permanent: true})
			default:
				w.finish(rec, m, tgt, attempt{err: err})
			}
		}
		return
	}
	if tgt.DailyLimit > 0 {
		msgs = w.applyDailyLimit(ctx, kind, id, tgt, msgs)
	}
	queue := make(chan OutboxMessage, len(msgs))
	for _, m := range msgs {
		queue <- m
	}
	close(queue)
	conns := min(s.cfg.MaxConnsPerRoute, len(msgs))
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() { w.sendQueue(ctx, rec, kind, id, tgt, queue) })
	}
	wg.Wait()
}

// sendQueue sends messages from queue over one connection at a time,
// reusing it between messages and redialling after any error.
func (w *Worker) sendQueue(ctx context.Context, rec *recorder, kind string, id int64, tgt Target, queue <-chan OutboxMessage) {
	s := w.s
	pk := poolKey{kind: kind, id: id, settings: fingerprint(tgt.Settings)}
	var conn *pooled
	defer func() {
		if conn != nil {
			w.pool.put(pk, conn)
		}
	}()
	for m := range queue {
		if ctx.Err() != nil {
			w.release(m)
			continue
		}
		sendCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.SendTimeout)
		start := time.Now()
		if conn == nil {
			var err error
			conn, err = w.pool.get(sendCtx, pk, func(ctx context.Context) (*Conn, error) {
				return s.net.Dial(ctx, tgt.Settings, nil)
			})
			if err != nil {
				cancel()
				conn = nil
				a := attempt{err: err, dur: time.Since(start)}
				var se *StepError
				if errors.As(err, &se) && se.Step == StepAuth && se.Reply != nil && se.Reply.Code >= 500 {
					w.markAuthFailed(ctx, kind, id)
					a.hold = true
				}
				w.finish(rec, m, tgt, a)
				// The server is unreachable: the rest of this queue waits too.
				for rest := range queue {
					w.finish(rec, rest, tgt, attempt{err: err})
				}
				return
			}
		}
		reply, err := conn.Send(sendCtx, m.EnvelopeFrom, m.RecipientList(), bytes.NewReader(m.Raw), nil)
		a := attempt{reply: reply, err: err, dur: time.Since(start)}
		if err == nil {
			if rerr := conn.Reset(sendCtx); rerr != nil {
				conn.Close()
				conn = nil
			}
		} else {
			conn.Close()
			conn = nil
		}
		cancel()
		w.finish(rec, m, tgt, a)
	}
}

// attempt is the outcome of one try.
type attempt struct {
	reply     *Reply
	err       error
	dur       time.Duration
	permanent bool // fail now whatever the error
	hold      bool // a sender problem: retry later without counting against the message
}

// finish works out what an attempt does to its message (its new state and
// a send-log entry) and hands that to the recorder, which writes it.
func (w *Worker) finish(rec *recorder, m OutboxMessage, tgt Target, a attempt) {
	s := w.s
	now := s.now()
	// attempts as the worker counted them: a claim counted it in the row
	// already, a handover only in memory (unpack). Every outcome sets the
	// same columns (sent_at and unknown_count as they are unless this
	// outcome changes them; the lease makes m's copy the row's), so that a
	// batch's UPDATE has one text per number of outcomes: one prepared
	// statement on SQLite, a handful in pgx's cache on PostgreSQL instead of
	// one per mix of outcomes.
	upd := map[string]any{"lease_owner": "", "lease_until": nil, "updated_at": now, "attempts": m.Attempts,
		"sent_at": m.SentAt, "unknown_count": m.UnknownCount}
	var (
		logStatus string
		se        *StepError
	)
	errors.As(a.err, &se)
	switch {
	case a.err == nil:
		upd["status"], upd["sent_at"], upd["next_attempt_at"] = StatusSent, now, nil
		logStatus = LogSent
	case se != nil && se.AfterData:
		m.UnknownCount++
		upd["unknown_count"] = m.UnknownCount
		upd["status"], upd["next_attempt_at"] = StatusUnknown, nil
		if m.UnknownCount <= s.cfg.MaxUnknownRetries {
			upd["next_attempt_at"] = now.Add(backoff(1))
		}
		logStatus = LogUnknown
		s.metrics.unknown.Inc()
	case a.permanent || (se != nil && !se.Temporary() && !a.hold):
		upd["status"], upd["next_attempt_at"] = StatusFailed, nil
		logStatus = LogFailed
	case now.Sub(m.CreatedAt) >= s.cfg.MaxQueueAge:
		upd["status"], upd["next_attempt_at"] = StatusFailed, nil
		logStatus = LogFailed
		if se == nil {
			a.err = fmt.Errorf("gave up after %s in the queue: %w", s.cfg.MaxQueueAge, a.err)
		}
	default:
		upd["status"], upd["next_attempt_at"] = StatusQueued, now.Add(backoff(m.Attempts))
		logStatus = LogRetry
	}
	entry := logEntry(now, m, tgt.Email, logStatus, a.reply, a.err, a.dur)
	upd["last_step"], upd["last_code"], upd["last_reply"] = entry.Step, entry.Code, entry.Reply
	upd["last_error"] = ""
	if a.err != nil {
		upd["last_error"] = cleanText(a.err.Error())
	}
	rec.add(outcome{m: m, account: tgt.Email, upd: upd, entry: entry, status: logStatus, dur: a.dur})
}

// outcome is one attempt ready to be written: the message's new state and
// its send-log entry.
type outcome struct {
	m       OutboxMessage
	account string
	upd     map[string]any
	entry   LogEntry
	status  string // Log*
	dur     time.Duration
}

// Bounds of the recorder: outcomes waiting to be written (beyond them a
// connection waits before its next message; they are also the messages
// that would be sent twice after a crash, besides those on the wire), and
// outcomes written in one transaction (and so the bind parameters of one
// multi-row INSERT).
const (
	maxPendingOutcomes = 16
	maxRecordBatch     = 100
	// recordLinger is how long the recorder gathers outcomes before it
	// writes them, unless the round ends first: one transaction for the
	// outcomes of many sends instead of one for every one or two.
	recordLinger = 25 * time.Millisecond
)

// recorder writes the outcomes of one round in the background, so that a
// connection goes on to its next message while the database records the
// last one. Whatever has piled up while a write ran goes into the next
// transaction together: one transaction, and one multi-row INSERT into the
// send log, for many messages when the database is the bottleneck, one per
// message when it is not.
//
// A message whose outcome is not yet written is still leased and "sending":
// if the process dies then, it is treated as any message in flight (unknown,
// resent once its lease runs out). close waits until every outcome is
// written.
type recorder struct {
	w    *Worker
	ctx  context.Context
	in   chan outcome
	done chan struct{}
}

// startRecorder starts the writer for a round of n messages.
func (w *Worker) startRecorder(ctx context.Context, n int) *recorder {
	r := &recorder{
		w: w, ctx: context.WithoutCancel(ctx),
		in: make(chan outcome, min(n, maxPendingOutcomes)), done: make(chan struct{}),
	}
	go r.run()
	return r
}

// add queues an outcome; it waits while maxPendingOutcomes are queued.
func (r *recorder) add(o outcome) { r.in <- o }

// close writes what is left and stops the writer.
func (r *recorder) close() {
	close(r.in)
	<-r.done
}

func (r *recorder) run() {
	defer close(r.done)
	batch := make([]outcome, 0, maxRecordBatch)
	for o := range r.in {
		batch = append(batch[:0], o)
		linger := time.NewTimer(recordLinger)
	more:
		for len(batch) < maxRecordBatch {
			select {
			case o, ok := <-r.in:
				if !ok { // the round is over: write now
					break more
				}
				batch = append(batch, o)
			case <-linger.C:
				break more
			}
		}
		linger.Stop()
		r.write(batch)
	}
}

// write records a batch in one transaction; when that fails, it records
// each outcome on its own so that one bad row does not cost the others.
// Then, as before batching, each sent message's copy is filed (CopySaver)
// and the attempt is counted and logged.
func (r *recorder) write(batch []outcome) {
	w := r.w
	tx := func(b []outcome) error { return w.recordOutcomes(r.ctx, b) }
	if err := tx(batch); err != nil {
		for i := range batch {
			if len(batch) > 1 {
				err = tx(batch[i : i+1])
			}
			if err != nil {
				w.s.log.Error("record send outcome", "outbox_id", batch[i].m.ID, "message_id", batch[i].m.MessageID, "error", err)
			}
		}
	}
	s := w.s
	for _, o := range batch {
		if o.status == LogSent {
			w.saveCopy(r.ctx, o.m)
		}
		s.metrics.attempts.WithLabelValues(o.status).Inc()
		if o.account != "" {
			s.metrics.sendSeconds.WithLabelValues(o.account).Observe(o.dur.Seconds())
		}
		level := s.log.Info
		if o.status != LogSent {
			level = s.log.Warn
		}
		level("send attempt", "outbox_id", o.m.ID, "message_id", o.m.MessageID, "route_kind", o.m.RouteKind,
			"route_id", o.m.RouteID, "outcome", o.status, "step", o.entry.Step, "code", o.entry.Code, "elapsed_ms", o.dur.Milliseconds())
	}
}

// recordOutcomes writes a batch of outcomes atomically: on PostgreSQL in one
// statement (pgwrite.go), elsewhere in one transaction (writeOutcomes).
func (w *Worker) recordOutcomes(ctx context.Context, batch []outcome) error {
	if pg := w.s.inserts.pg; pg != nil {
		return pg.outcomes(ctx, w.s.db, batch, w.owner)
	}
	return w.s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error { return w.writeOutcomes(tx, batch) })
}

// leaseLostReply starts the reply of a send-log entry whose message's lease
// had passed to another worker when the outcome was recorded.
const leaseLostReply = "lease lost before the outcome was recorded: "

// writeOutcomes updates the messages whose lease this worker still holds,
// in one statement, and inserts the send-log entries in one more. When a
// lease was taken over, the other holder records its own outcome and the
// entry says so.
func (w *Worker) writeOutcomes(tx *gorm.DB, batch []outcome) error {
	ids := make([]int64, len(batch))
	for i, o := range batch {
		ids[i] = o.m.ID
	}
	q := tx.Model(&OutboxMessage{}).Where("id IN ? AND lease_owner = ?", ids, w.owner)
	if w.s.db.Dialect == store.Postgres {
		// Held until the UPDATE below: no lease changes hands in between.
		// (SQLite's transaction already holds the database's write lock.)
		q = q.Clauses(clause.Locking{Strength: "UPDATE"})
	}
	var held []int64
	if err := q.Pluck("id", &held).Error; err != nil {
		return fmt.Errorf("read leases: %w", err)
	}
	isHeld := make(map[int64]bool, len(held))
	for _, id := range held {
		isHeld[id] = true
	}
	entries := make([]LogEntry, len(batch))
	var mine []outcome
	for i, o := range batch {
		entries[i] = o.entry
		if !isHeld[o.m.ID] {
			entries[i].Reply = leaseLostReply + entries[i].Reply
			continue
		}
		mine = append(mine, o)
	}
	if si := w.s.sqlite; si != nil { // one row per statement: sqlitewrite.go
		for _, o := range mine {
			if _, err := si.updateRow(tx, o.m.ID, w.owner, o.upd); err != nil {
				return fmt.Errorf("record outcome: %w", err)
			}
		}
		for i := range entries {
			if err := si.log.insert(tx, &entries[i]); err != nil {
				return fmt.Errorf("log outcome: %w", err)
			}
		}
		return nil
	}
	if len(mine) > 0 {
		query, args := outcomeUpdate(mine, w.owner)
		if err := tx.Exec(query, args...).Error; err != nil {
			return fmt.Errorf("record outcomes: %w", err)
		}
	}
	return tx.Create(&entries).Error
}

// outcomeUpdate builds one UPDATE for many messages: each column that some
// outcome changes is set by a CASE on the message's id, and keeps its value
// for the others.
func outcomeUpdate(batch []outcome, owner string) (string, []any) {
	var cols []string
	seen := map[string]bool{}
	for _, o := range batch {
		for c := range o.upd {
			if !seen[c] {
				seen[c] = true
				cols = append(cols, c)
			}
		}
	}
	slices.Sort(cols)
	var (
		b    strings.Builder
		args []any
	)
	b.WriteString("UPDATE outbox SET ")
	for i, c := range cols {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(c + " = CASE id")
		for _, o := range batch {
			if v, ok := o.upd[c]; ok {
				b.WriteString(" WHEN ? THEN ?")
				args = append(args, o.m.ID, v)
			}
		}
		b.WriteString(" ELSE " + c + " END")
	}
	b.WriteString(" WHERE lease_owner = ? AND id IN (")
	args = append(args, owner)
	for i, o := range batch {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("?")
		args = append(args, o.m.ID)
	}
	b.WriteString(")")
	return b.String(), args
}

// saveCopy asks the route's CopySaver, if any, to file the sent message and
// records the result.
func (w *Worker) saveCopy(ctx context.Context, m OutboxMessage) {
	s := w.s
	for _, r := range s.routers {
		cs, ok := r.(CopySaver)
		if r.Kind() != m.RouteKind || !ok {
			continue
		}
		now := s.now()
		m.SentAt = &now
		res, err := cs.SaveCopy(context.WithoutCancel(ctx), m.RouteID, m)
		if err != nil {
			res = "failed: " + cleanText(err.Error())
			s.log.Warn("save sent copy", "outbox_id", m.ID, "message_id", m.MessageID, "error", err)
		}
		if res == "" {
			return
		}
		if err := s.db.WithContext(context.WithoutCancel(ctx)).Model(&OutboxMessage{}).Where("id = ?", m.ID).
			Update("sent_copy", res).Error; err != nil {
			s.log.Error("record sent copy", "outbox_id", m.ID, "error", err)
		}
		return
	}
}

// release puts an unstarted message back in the queue, due now.
func (w *Worker) release(m OutboxMessage) { w.releaseAll([]OutboxMessage{m}) }

// releaseAll puts unstarted messages back in the queue, due now, in one
// statement, without the attempt their claim counted.
func (w *Worker) releaseAll(msgs []OutboxMessage) {
	if len(msgs) == 0 {
		return
	}
	byAttempts := map[int][]int64{}
	for _, m := range msgs {
		// The row holds one attempt fewer once this worker is done with
		// it: a claim counted one in the row; unpack counted one in memory
		// only (the row holds 0), and a message not unpacked has 0.
		a := max(m.Attempts-1, 0)
		byAttempts[a] = append(byAttempts[a], m.ID)
	}
	now := w.s.now()
	for attempts, ids := range byAttempts {
		err := w.s.db.WithContext(context.Background()).Model(&OutboxMessage{}).
			Where("id IN ? AND lease_owner = ?", ids, w.owner).
			Updates(map[string]any{"status": StatusQueued, "lease_owner": "", "lease_until": nil,
				"next_attempt_at": now, "attempts": attempts, "updated_at": now}).Error
		if err != nil {
			w.s.log.Error("release messages", "outbox_ids", ids, "error", err)
		}
	}
}

// releaseUntried puts back in the queue the rows leased to this worker
// that it never tried (attempts 0: handed over, handoff.go). Run calls it
// last, when nothing of this worker's is on the wire: such a row is one
// whose insert reported an error to its submitter although it committed.
func (w *Worker) releaseUntried() {
	now := w.s.now()
	res := w.s.db.WithContext(context.Background()).Model(&OutboxMessage{}).
		Where("status = ? AND lease_owner = ? AND attempts = 0", StatusSending, w.owner).
		Updates(map[string]any{"status": StatusQueued, "lease_owner": "", "lease_until": nil,
			"next_attempt_at": now, "updated_at": now})
	if res.Error != nil {
		w.s.log.Error("release untried messages", "error", res.Error)
	} else if res.RowsAffected > 0 {
		w.s.log.Warn("untried messages leased to this worker went back to the queue", "messages", res.RowsAffected)
	}
}

// applyDailyLimit returns the messages the route may still send within its
// rolling 24-hour limit and puts the rest back until the window frees up.
func (w *Worker) applyDailyLimit(ctx context.Context, kind string, id int64, tgt Target, msgs []OutboxMessage) []OutboxMessage {
	s := w.s
	now := s.now()
	since := now.Add(-24 * time.Hour)
	var sent []time.Time
	err := s.db.WithContext(ctx).Model(&LogEntry{}).
		Where("route_kind = ? AND route_id = ? AND status = ? AND created_at >= ?", kind, id, LogSent, since).
		Order("created_at").Pluck("created_at", &sent).Error
	if err != nil {
		s.log.Error("count sends for the daily limit", "route_kind", kind, "route_id", id, "error", err)
		sent = nil
	}
	budget := tgt.DailyLimit - len(sent)
	if budget >= len(msgs) {
		return msgs
	}
	budget = max(budget, 0)
	// The window frees one slot when its oldest send turns 24 hours old; when
	// this batch uses the whole budget, that send is about now.
	resume := now.Add(24 * time.Hour)
	if len(sent) > 0 {
		resume = sent[0].Add(24 * time.Hour)
	}
	for _, m := range msgs[budget:] {
		err := s.db.WithContext(context.WithoutCancel(ctx)).Model(&OutboxMessage{}).
			Where("id = ? AND lease_owner = ?", m.ID, w.owner).
			Updates(map[string]any{"status": StatusQueued, "lease_owner": "", "lease_until": nil,
				"next_attempt_at": resume, "attempts": max(m.Attempts-1, 0),
				"last_error": fmt.Sprintf("daily limit of %d reached; waiting", tgt.DailyLimit), "updated_at": now}).Error
		if err != nil {
			s.log.Error("defer message over the daily limit", "outbox_id", m.ID, "error", err)
		}
	}
	s.log.Info("daily limit reached; messages wait", "route_kind", kind, "route_id", id, "waiting", len(msgs)-budget, "resume_at", resume)
	return msgs[:budget]
}

func (w *Worker) markAuthFailed(ctx context.Context, kind string, id int64) {
	for _, r := range w.s.routers {
		if r.Kind() != kind {
			continue
		}
		if err := r.AuthFailed(context.WithoutCancel(ctx), id); err != nil {
			w.s.log.Error("mark sender auth_failed", "route_kind", kind, "route_id", id, "error", err)
		}
	}
}

func logEntry(now time.Time, m OutboxMessage, account, status string, reply *Reply, err error, dur time.Duration) LogEntry {
	e := LogEntry{
		OutboxID: m.ID, MessageID: m.MessageID, UserID: m.UserID, RouteKind: m.RouteKind, RouteID: m.RouteID,
		AccountEmail: account, FromAddr: m.FromAddr, Recipients: m.Recipients, Subject: m.Subject,
		Status: status, DurationMS: dur.Milliseconds(), CrmEntityType: m.CrmEntityType, CrmEntityID: m.CrmEntityID,
		CreatedAt: now,
	}
	var se *StepError
	if errors.As(err, &se) {
		e.Step = string(se.Step)
		if se.Reply != nil {
			reply = se.Reply
		}
	} else if err == nil {
		e.Step = string(StepData)
	}
	if reply != nil {
		e.Code = reply.Code
		e.Reply = reply.Text
		if reply.Enhanced != "" {
			e.Reply = reply.Enhanced + " " + reply.Text
		}
	} else if err != nil {
		e.Reply = cleanText(err.Error())
	}
	return e
}

// backoff is the delay before attempt n+1.
func backoff(n int) time.Duration {
	d := retryBase
	for i := 1; i < n && d < retryMax; i++ {
		d *= 2
	}
	d = min(d, retryMax)
	jitter := 0.8 + 0.4*rand.Float64()
	return time.Duration(float64(d) * jitter)
}

// fingerprint identifies settings without keeping the password readable.
func fingerprint(s Settings) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d\x00%s\x00%s\x00%s\x00%s", s.Host, s.Port, s.Security, s.Auth, s.Login, s.Password.Reveal())
	return hex.EncodeToString(h.Sum(nil))
}

type poolKey struct {
	kind     string
	id       int64
	settings string
}

// pooled is a connection with its birth time: it is reused for at most the
// pool's maxAge.
type pooled struct {
	*Conn
	born time.Time
}

// connPool keeps idle SMTP connections per route for reuse.
type connPool struct {
	mu     sync.Mutex
	maxAge time.Duration
	idle   map[poolKey][]*pooled
}

func newConnPool(maxAge time.Duration) *connPool {
	return &connPool{maxAge: maxAge, idle: map[poolKey][]*pooled{}}
}

func (p *connPool) get(ctx context.Context, k poolKey, dial func(context.Context) (*Conn, error)) (*pooled, error) {
	p.mu.Lock()
	for len(p.idle[k]) > 0 {
		l := p.idle[k]
		pc := l[len(l)-1]
		p.idle[k] = l[:len(l)-1]
		if time.Since(pc.born) < p.maxAge {
			p.mu.Unlock()
			return pc, nil
		}
		go pc.Close()
	}
	p.mu.Unlock()
	c, err := dial(ctx)
	if err != nil {
		return nil, err
	}
	return &pooled{Conn: c, born: time.Now()}, nil
}

// put returns a healthy connection for reuse, or closes it when it is too
// old.
func (p *connPool) put(k poolKey, pc *pooled) {
	if time.Since(pc.born) >= p.maxAge {
		go pc.Close()
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.idle[k] = append(p.idle[k], pc)
}

func (p *connPool) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, l := range p.idle {
		for _, pc := range l {
			pc.Close()
		}
		delete(p.idle, k)
	}
}
