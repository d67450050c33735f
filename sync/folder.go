package imapsync

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/mailbox"
)

// Bounds of one folder sync.
const (
	flagChunk = 1000 // UIDs per flag-sweep FETCH and per IN (…) query
	// commitBytes is the stored (encoded) bytes buffered before a commit:
	// a commit that fits SQLite's default page cache (2 MiB) is written
	// once, at the commit; a larger one grows the cache for the
	// transaction and gives it back after, and the pure-Go SQLite maps
	// and unmaps that memory each time (8 MiB commits: 5,000 messages
	// synced in 5.4 s; 1.5 MiB: 4.9 s).
	commitBytes    = 3 << 19
	statementBytes = 1 << 20 // stored (encoded) bytes per INSERT statement
)

// FolderResult is what one sync of one folder did.
type FolderResult struct {
	Folder      string
	UIDValidity uint32
	Reset       bool // UIDVALIDITY changed: the folder's rows were removed and it is synced anew
	Unchanged   bool // the server reported nothing new: no search, no fetch, no write
	New         int  // rows inserted
	Updated     int  // rows whose flags changed
	Deleted     int  // rows removed (expunged on the server)
	Bodies      int  // message bodies fetched
	Bytes       int64
	Failed      int // messages that could not be read this time (retried)
	Quarantined int // messages quarantined this time
	Total       int // messages in the folder (EXISTS)
}

// folderSync is one run over one folder.
type folderSync struct {
	e    *Engine
	s    *session
	mb   mailbox.Mailbox
	f    mailbox.FolderRow
	sel  *imap.SelectData
	res  FolderResult
	incr bool // not the folder's first sync: new messages count toward the lag metric

	mu sync.Mutex // res and f, between the fetch pipeline's writers
}

// syncFolder brings the stored copy of folder f up to the server's state:
//
//  1. EXAMINE (with CONDSTORE when offered): UIDVALIDITY, UIDNEXT,
//     HIGHESTMODSEQ, EXISTS.
//  2. A new UIDVALIDITY removes the folder's rows (RFC 3501 2.3.1.1).
//  3. With CONDSTORE, UIDNEXT, EXISTS and HIGHESTMODSEQ equal to those
//     stored at the end of the last complete run mean nothing changed:
//     stop, having written nothing.
//  4. Unless UIDNEXT and EXISTS are unchanged, UID SEARCH ALL, diffed with
//     the stored UIDs: rows the server lacks are deleted, UIDs the
//     database lacks are to fetch.
//  5. Flags of stored rows: UID FETCH (FLAGS) (CHANGEDSINCE stored
//     HIGHESTMODSEQ) with CONDSTORE, else a sweep of every stored UID in
//     chunks; only rows whose flags differ are written.
//  6. Missing messages, newest first, in UID FETCH batches of BatchSize,
//     each body read whole from its literal, parsed and encoded by the
//     fetch workers (S2 or as it came: rawEncoder), committed per batch
//     (or per 8 MiB stored) with the folder's progress (total, synced).
//  7. The last commit also stores UIDNEXT and HIGHESTMODSEQ from step 1,
//     unless a message failed (then the next run retries it).
//
// A crash between commits loses at most the batch being fetched: its rows
// and the folder's state were not committed, and the next run's diff finds
// the same UIDs missing.
func (e *Engine) syncFolder(ctx context.Context, s *session, mb mailbox.Mailbox, f mailbox.FolderRow) (FolderResult, error) {
	fs := &folderSync{e: e, s: s, mb: mb, f: f, res: FolderResult{Folder: f.Name}}
	err := fs.run(ctx)
	fs.res.UIDValidity = fs.f.UIDValidity
	return fs.res, err
}

func (fs *folderSync) run(ctx context.Context) error {
	e, s, f := fs.e, fs.s, &fs.f
	sel, err := s.selectFolder(f.Name)
	if err != nil {
		return err
	}
	fs.sel = sel
	fs.res.Total = int(sel.NumMessages)
	fs.incr = f.UIDNext != 0

	if f.UIDValidity != sel.UIDValidity {
		if err := fs.reset(ctx); err != nil {
			return err
		}
	}
	condstore := s.condstore && sel.HighestModSeq > 0
	if f.UIDNext != 0 && f.UIDNext == uint32(sel.UIDNext) && f.Total == int(sel.NumMessages) &&
		condstore && f.HighestModseq == sel.HighestModSeq {
		fs.res.Unchanged = true
		return nil
	}

	stored, err := e.storedUIDs(ctx, f.ID, f.UIDValidity)
	if err != nil {
		return err
	}
	var toFetch []uint32
	if f.UIDNext == 0 || f.UIDNext != uint32(sel.UIDNext) || f.Total != int(sel.NumMessages) {
		server, err := s.searchAll(f.Name)
		if err != nil {
			return err
		}
		quarantined, err := e.quarantinedUIDs(ctx, f.ID, f.UIDValidity)
		if err != nil {
			return err
		}
		gone := minus(stored, server)
		toFetch = minus(minus(server, stored), quarantined)
		if len(gone) > 0 {
			if err := fs.deleteRows(ctx, gone); err != nil {
				return err
			}
			stored = minus(stored, gone)
		}
	}

	if len(stored) > 0 {
		if condstore && f.HighestModseq > 0 {
			switch {
			case sel.HighestModSeq > f.HighestModseq:
				err = fs.changedFlags(ctx)
			case sel.HighestModSeq < f.HighestModseq:
				// HIGHESTMODSEQ went down under the same UIDVALIDITY, which
				// RFC 7162 3.1.2.1 forbids (a server restored from a
				// backup): the stored mod-sequences mean nothing now, so
				// every flag is compared.
				e.log.Warn("HIGHESTMODSEQ went backwards; comparing every flag", "mailbox_id", fs.mb.ID, "folder", f.Name,
					"stored_modseq", f.HighestModseq, "modseq", sel.HighestModSeq)
				err = fs.sweepFlags(ctx, stored)
			}
		} else {
			err = fs.sweepFlags(ctx, stored)
		}
		if err != nil {
			return err
		}
	}

	if len(toFetch) == 0 {
		return fs.finish(ctx)
	}
	slices.Reverse(toFetch) // newest first
	return fs.fetchAll(ctx, toFetch)
}

// reset handles a new UIDVALIDITY: every row of the folder goes, with its
// quarantine entries, and the folder's state starts over, in one
// transaction.
func (fs *folderSync) reset(ctx context.Context) error {
	e, f, sel := fs.e, &fs.f, fs.sel
	var deleted int64
	err := e.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		r := tx.Where("folder_id = ?", f.ID).Delete(&messageRow{})
		if r.Error != nil {
			return r.Error
		}
		deleted = r.RowsAffected
		if err := tx.Where("folder_id = ?", f.ID).Delete(&quarantineRow{}).Error; err != nil {
			return err
		}
		return tx.Model(&mailbox.FolderRow{}).Where("id = ?", f.ID).Updates(map[string]any{
			"uidvalidity": sel.UIDValidity, "uidnext": 0, "highest_modseq": 0,
			"total": sel.NumMessages, "synced": 0,
		}).Error
	})
	if err != nil {
		return &stepError{Step: stepStore, Folder: f.Name, Err: fmt.Errorf("reset for UIDVALIDITY %d: %w", sel.UIDValidity, err)}
	}
	if f.UIDValidity != 0 {
		fs.res.Reset = true
		e.log.Info("UIDVALIDITY changed; folder resynced from scratch", "mailbox_id", fs.mb.ID, "folder", f.Name,
			"old_uidvalidity", f.UIDValidity, "uidvalidity", sel.UIDValidity, "rows_removed", deleted)
	}
	fs.res.Deleted += int(deleted)
	e.count.rowWrites.Add(deleted)
	e.metrics.rowWrites.WithLabelValues("delete").Add(float64(deleted))
	f.UIDValidity, f.UIDNext, f.HighestModseq, f.Total, f.Synced = sel.UIDValidity, 0, 0, int(sel.NumMessages), 0
	return nil
}

func (fs *folderSync) deleteRows(ctx context.Context, uids []uint32) error {
	e, f := fs.e, fs.f
	for start := 0; start < len(uids); start += flagChunk {
		chunk := uids[start:min(start+flagChunk, len(uids))]
		r := e.db.WithContext(ctx).Where("folder_id = ? AND uidvalidity = ? AND uid IN ?", f.ID, f.UIDValidity, chunk).Delete(&messageRow{})
		if r.Error != nil {
			return &stepError{Step: stepStore, Folder: f.Name, Err: fmt.Errorf("delete expunged rows: %w", r.Error)}
		}
		fs.res.Deleted += int(r.RowsAffected)
		e.count.rowWrites.Add(r.RowsAffected)
		e.metrics.rowWrites.WithLabelValues("delete").Add(float64(r.RowsAffected))
	}
	return nil
}

// flagChange is the server's flags of one message.
type flagChange struct {
	uid    uint32
	flags  string
	modseq uint64
}

// changedFlags fetches the flags changed since the stored HIGHESTMODSEQ
// (RFC 7162 3.1.4) and writes those that differ.
func (fs *folderSync) changedFlags(ctx context.Context) error {
	s, f := fs.s, fs.f
	cmd := s.c.Fetch(imap.UIDSet{imap.UIDRange{Start: 1, Stop: 0}}, &imap.FetchOptions{
		UID: true, Flags: true, ModSeq: true, ChangedSince: f.HighestModseq,
	})
	return fs.streamFlags(ctx, cmd)
}

// sweepFlags compares the flags of every stored message with the
// server's, flagChunk UIDs per command (without CONDSTORE, or to finish an
// initial sync that was cut).
func (fs *folderSync) sweepFlags(ctx context.Context, stored []uint32) error {
	for start := 0; start < len(stored); start += flagChunk {
		chunk := stored[start:min(start+flagChunk, len(stored))]
		cmd := fs.s.c.Fetch(uidSet(chunk), &imap.FetchOptions{UID: true, Flags: true, ModSeq: fs.s.condstore})
		if err := fs.streamFlags(ctx, cmd); err != nil {
			return err
		}
	}
	return nil
}

// streamFlags reads a flags FETCH to its end and applies the changes in
// chunks (database only inside the loop: never another IMAP command).
func (fs *folderSync) streamFlags(ctx context.Context, cmd *imapclient.FetchCommand) error {
	s, f := fs.s, fs.f
	w := s.watch()
	var (
		pending  []flagChange
		storeErr error
	)
	for {
		msg := cmd.Next()
		if msg == nil {
			break
		}
		w.touch()
		var c flagChange
		for item := msg.Next(); item != nil; item = msg.Next() {
			switch it := item.(type) {
			case imapclient.FetchItemDataUID:
				c.uid = uint32(it.UID)
			case imapclient.FetchItemDataFlags:
				c.flags = flagString(it.Flags)
			case imapclient.FetchItemDataModSeq:
				c.modseq = it.ModSeq
			}
		}
		if c.uid == 0 || storeErr != nil {
			continue
		}
		pending = append(pending, c)
		if len(pending) >= flagChunk {
			storeErr = fs.applyFlags(ctx, pending)
			pending = pending[:0]
		}
	}
	err := s.end(w, cmd.Close())
	if err != nil {
		return &stepError{Step: stepFlags, Folder: f.Name, Err: err}
	}
	if storeErr == nil && len(pending) > 0 {
		storeErr = fs.applyFlags(ctx, pending)
	}
	return storeErr
}

// applyFlags writes the flags that differ from the stored ones.
func (fs *folderSync) applyFlags(ctx context.Context, changes []flagChange) error {
	e, f := fs.e, fs.f
	uids := make([]uint32, len(changes))
	for i, c := range changes {
		uids[i] = c.uid
	}
	var rows []struct {
		UID   uint32
		Flags string
	}
	if err := e.db.WithContext(ctx).Model(&messageRow{}).Select("uid", "flags").
		Where("folder_id = ? AND uidvalidity = ? AND uid IN ?", f.ID, f.UIDValidity, uids).Find(&rows).Error; err != nil {
		return &stepError{Step: stepStore, Folder: f.Name, Err: err}
	}
	have := make(map[uint32]string, len(rows))
	for _, r := range rows {
		have[r.UID] = r.Flags
	}
	var diff []flagChange
	for _, c := range changes {
		if old, ok := have[c.uid]; ok && old != c.flags {
			diff = append(diff, c)
		}
	}
	if len(diff) == 0 {
		return nil
	}
	err := e.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		for _, c := range diff {
			upd := map[string]any{"flags": c.flags}
			if c.modseq != 0 {
				upd["modseq"] = c.modseq
			}
			if err := tx.Model(&messageRow{}).Where("folder_id = ? AND uidvalidity = ? AND uid = ?", f.ID, f.UIDValidity, c.uid).
				Updates(upd).Error; err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return &stepError{Step: stepStore, Folder: f.Name, Err: fmt.Errorf("update flags: %w", err)}
	}
	fs.res.Updated += len(diff)
	e.count.rowWrites.Add(int64(len(diff)))
	e.metrics.rowWrites.WithLabelValues("update").Add(float64(len(diff)))
	return nil
}

// commit stores a batch: the rows, the failures' quarantine counts, the
// folder's progress and, when final, its state, in one transaction.
func (fs *folderSync) commit(ctx context.Context, batch []fetched, final bool) error {
	e, f, sel := fs.e, &fs.f, fs.sel
	now := e.now()
	var (
		rows        []messageRow
		failures    []fetched
		inserted    int64
		quarantined []uint32
	)
	for _, m := range batch {
		if m.failed != nil {
			failures = append(failures, m)
			continue
		}
		m.row.CreatedAt = now
		if m.row.RawCodec == "" {
			m.row.RawCodec = codecNone // raw omitted: nothing to decode
		}
		rows = append(rows, m.row)
	}
	err := e.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		inserted, quarantined = 0, nil
		if e.db.Dialect == store.Postgres {
			// A mirror can afford to lose its last commits in a database
			// crash (the server still has the messages; the next run's diff
			// fetches them again), so it does not wait for the WAL flush.
			if err := tx.Exec("SET LOCAL synchronous_commit TO OFF").Error; err != nil {
				return err
			}
		}
		// One INSERT per statementBytes of raw (or 100 rows): the
		// driver's buffers grow to a statement's size and stay so.
		for start := 0; start < len(rows); {
			end, size := start, 0
			for end < len(rows) && end-start < 100 && (end == start || size+len(rows[end].Raw) <= statementBytes) {
				size += len(rows[end].Raw)
				end++
			}
			// DO NOTHING: a row already there (another run got it first)
			// stays as it is.
			r := tx.Clauses(clause.OnConflict{DoNothing: true}).Create(rows[start:end])
			if r.Error != nil {
				return fmt.Errorf("insert messages: %w", r.Error)
			}
			inserted += r.RowsAffected
			start = end
		}
		for _, m := range failures {
			q, err := fs.recordFailure(tx, m, now)
			if err != nil {
				return err
			}
			if q {
				quarantined = append(quarantined, m.row.UID)
			}
		}
		upd := map[string]any{
			"total":  sel.NumMessages,
			"synced": syncedExpr(f.ID, f.UIDValidity),
		}
		if !final && fs.res.Deleted == 0 {
			// Counting the folder's rows at every commit costs a pass over
			// them each time (quadratic over a large initial sync): the
			// count was exact at the last commit, and this one adds
			// inserted. The final commit counts.
			upd["synced"] = gorm.Expr("synced + ?", inserted)
		}
		if final && fs.res.Failed+len(failures)-len(quarantined) == 0 {
			upd["uidnext"], upd["highest_modseq"], upd["last_sync_at"] = uint32(sel.UIDNext), sel.HighestModSeq, now
		}
		return tx.Model(&mailbox.FolderRow{}).Where("id = ?", f.ID).Updates(upd).Error
	})
	if err != nil {
		return &stepError{Step: stepStore, Folder: f.Name, Err: err}
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.res.New += int(inserted)
	fs.res.Failed += len(failures) - len(quarantined)
	fs.res.Quarantined += len(quarantined)
	e.count.rowWrites.Add(inserted)
	e.count.messages.Add(inserted)
	e.metrics.rowWrites.WithLabelValues("insert").Add(float64(inserted))
	e.metrics.messages.Add(float64(inserted))
	if len(failures) > 0 {
		e.metrics.errors.WithLabelValues(stepParse).Add(float64(len(failures)))
	}
	uids := make([]uint32, 0, len(rows))
	for _, r := range rows {
		uids = append(uids, r.UID)
		if fs.incr {
			e.metrics.lag.Observe(now.Sub(r.InternalDate).Seconds())
		}
	}
	if final && fs.res.Failed == 0 {
		f.UIDNext, f.HighestModseq = uint32(sel.UIDNext), sel.HighestModSeq
	}
	f.Total = int(sel.NumMessages)
	if h := e.hooks.committed; h != nil {
		h(fs.mb.ID, f.Name, uids)
	}
	return nil
}

// recordFailure counts a failed attempt at a message; at the engine's
// limit the message is quarantined: logged, counted, and left out of later
// syncs of this UIDVALIDITY.
func (fs *folderSync) recordFailure(tx *gorm.DB, m fetched, now time.Time) (bool, error) {
	e, f := fs.e, fs.f
	msg := clean(m.failed.Error(), 1000)
	q := quarantineRow{MailboxID: fs.mb.ID, FolderID: f.ID, UIDValidity: f.UIDValidity, UID: m.row.UID, Attempts: 1,
		Quarantined: e.cfg.MaxParseFailures <= 1, LastError: msg, UpdatedAt: now}
	err := tx.Clauses(clause.OnConflict{
		Columns: []clause.Column{{Name: "folder_id"}, {Name: "uidvalidity"}, {Name: "uid"}},
		DoUpdates: clause.Assignments(map[string]any{
			"attempts":    gorm.Expr("sync_quarantine.attempts + 1"),
			"quarantined": gorm.Expr("sync_quarantine.attempts + 1 >= ?", e.cfg.MaxParseFailures),
			"last_error":  msg, "updated_at": now,
		}),
	}).Create(&q).Error
	if err != nil {
		return false, fmt.Errorf("record failure of uid %d: %w", m.row.UID, err)
	}
	var got quarantineRow
	if err := tx.Where("folder_id = ? AND uidvalidity = ? AND uid = ?", f.ID, f.UIDValidity, m.row.UID).Take(&got).Error; err != nil {
		return false, err
	}
	if got.Quarantined {
		e.count.quarantined.Add(1)
		e.metrics.quarantined.Inc()
		e.log.Warn("message quarantined: it failed to parse too often", "mailbox_id", fs.mb.ID, "folder", f.Name,
			"uid", m.row.UID, "attempts", got.Attempts, "error", msg)
		return true, nil
	}
	e.log.Info("message failed to parse; it will be retried", "mailbox_id", fs.mb.ID, "folder", f.Name,
		"uid", m.row.UID, "attempts", got.Attempts, "error", msg)
	return false, nil
}

// finish stores the folder's state after a run that fetched nothing; it
// writes only what changed.
func (fs *folderSync) finish(ctx context.Context) error {
	e, f, sel := fs.e, &fs.f, fs.sel
	if f.UIDNext == uint32(sel.UIDNext) && f.HighestModseq == sel.HighestModSeq && f.Total == int(sel.NumMessages) &&
		fs.res.Deleted == 0 && fs.res.Failed == 0 {
		if fs.res.Updated == 0 {
			fs.res.Unchanged = true
		}
		return nil
	}
	upd := map[string]any{
		"total":  sel.NumMessages,
		"synced": syncedExpr(f.ID, f.UIDValidity),
	}
	if fs.res.Failed == 0 {
		upd["uidnext"], upd["highest_modseq"], upd["last_sync_at"] = uint32(sel.UIDNext), sel.HighestModSeq, e.now()
	}
	if err := e.db.WithContext(ctx).Model(&mailbox.FolderRow{}).Where("id = ?", f.ID).Updates(upd).Error; err != nil {
		return &stepError{Step: stepStore, Folder: f.Name, Err: err}
	}
	if fs.res.Failed == 0 {
		f.UIDNext, f.HighestModseq = uint32(sel.UIDNext), sel.HighestModSeq
	}
	f.Total = int(sel.NumMessages)
	return nil
}

// storedUIDs returns the folder's stored UIDs at uidvalidity, ascending.
func (e *Engine) storedUIDs(ctx context.Context, folderID int64, uidvalidity uint32) ([]uint32, error) {
	var uids []uint32
	if err := e.db.WithContext(ctx).Model(&messageRow{}).Where("folder_id = ? AND uidvalidity = ?", folderID, uidvalidity).
		Order("uid").Pluck("uid", &uids).Error; err != nil {
		return nil, &stepError{Step: stepStore, Err: fmt.Errorf("read stored UIDs: %w", err)}
	}
	return uids, nil
}

func (e *Engine) quarantinedUIDs(ctx context.Context, folderID int64, uidvalidity uint32) ([]uint32, error) {
	var uids []uint32
	if err := e.db.WithContext(ctx).Model(&quarantineRow{}).Where("folder_id = ? AND uidvalidity = ? AND quarantined = ?", folderID, uidvalidity, true).
		Order("uid").Pluck("uid", &uids).Error; err != nil {
		return nil, &stepError{Step: stepStore, Err: fmt.Errorf("read quarantined UIDs: %w", err)}
	}
	return uids, nil
}

// minus returns the elements of a not in b; both ascending.
func minus(a, b []uint32) []uint32 {
	var out []uint32
	j := 0
	for _, x := range a {
		for j < len(b) && b[j] < x {
			j++
		}
		if j < len(b) && b[j] == x {
			continue
		}
		out = append(out, x)
	}
	return out
}

func sortedUnique(s []uint32) []uint32 {
	slices.Sort(s)
	return slices.Compact(s)
}

// syncedExpr counts the stored rows of a folder, for its synced column.
func syncedExpr(folderID int64, uidvalidity uint32) clause.Expr {
	return gorm.Expr("(SELECT COUNT(*) FROM messages WHERE folder_id = ? AND uidvalidity = ?)", folderID, uidvalidity)
}
