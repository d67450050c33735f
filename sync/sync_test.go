package imapsync

import (
	"context"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/store/storetest"
	"github.com/mailsync/mailsync/internal/testpeer"
)

const (
	annLogin = "ann@example.test"
	annPass  = "Ann-Pa55"
)

// TestInitialAndIncremental syncs a generated INBOX of 5,000 messages from
// a real Dovecot and compares it with the server (UIDs, flags, the bytes
// of every message); then a resync of the unchanged folders fetches no
// body and writes no row; then flag changes, new messages, expunges and a
// UIDVALIDITY reset (a folder deleted and created again) each converge,
// each writing only the rows that changed.
func TestInitialAndIncremental(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		ca := testpeer.NewCA(t)
		dv := testpeer.StartDovecot(t, &testpeer.DovecotOptions{CA: ca})
		dv.AddUser(t, annLogin, annPass)
		const n = 5000
		for i := range n {
			dv.Deliver(t, annLogin, "INBOX", genMessage(i, 200+(i%13)*150), flagsFor(i)...)
		}
		for i := range 30 {
			dv.Deliver(t, annLogin, "Archive", genMessage(10000+i, 400))
		}
		v := newTestEnv(t, db, ca, Config{BatchSize: 500})
		mb := v.connect(t, dv, annLogin, annPass, "Archive")
		peer := dv.Client(t, annLogin, annPass)

		start := time.Now()
		res, err := v.eng.SyncOnce(ctx, mb.ID)
		if err != nil {
			t.Fatalf("initial SyncOnce() = %v", err)
		}
		t.Logf("initial sync of %d messages: %v (%+v)", n, time.Since(start).Round(time.Millisecond), res)
		if got := v.assertConverged(t, peer, mb.ID, "INBOX"); got != n {
			t.Fatalf("the server has %d messages in INBOX, want %d", got, n)
		}
		v.assertConverged(t, peer, mb.ID, "Archive")

		// Newest first: the first batch committed holds the highest UIDs.
		var firstRow messageRow
		if err := db.Gorm.Where("folder_id = ?", v.folderRow(t, mb.ID, "INBOX").ID).Order("id").Take(&firstRow).Error; err != nil {
			t.Fatal(err)
		}
		if firstRow.UID <= n-500 {
			t.Errorf("the first stored row is uid %d; want one of the newest 500 (newest first)", firstRow.UID)
		}

		// A resync of the unchanged mailbox: no body, no row.
		before := v.eng.Stats()
		res, err = v.eng.SyncOnce(ctx, mb.ID)
		if err != nil {
			t.Fatalf("resync = %v", err)
		}
		if d := statsDelta(before, v.eng.Stats()); d.BodyFetches != 0 || d.RowWrites != 0 {
			t.Errorf("resync of an unchanged mailbox: %d body fetches, %d row writes; want 0 and 0", d.BodyFetches, d.RowWrites)
		}
		for _, r := range res {
			if !r.Unchanged {
				t.Errorf("resync: folder %q not reported unchanged: %+v", r.Folder, r)
			}
		}

		// Flag changes, expunges and new messages, all at once.
		if _, err := peer.Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		flagged := imap.UIDSetNum(10, 11, 12, 4000)
		if err := peer.Store(flagged, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged}, Silent: true}, nil).Close(); err != nil {
			t.Fatal(err)
		}
		unseen := imap.UIDSetNum(1, 8) // both \Seen by flagsFor
		if err := peer.Store(unseen, &imap.StoreFlags{Op: imap.StoreFlagsDel, Flags: []imap.Flag{imap.FlagSeen}, Silent: true}, nil).Close(); err != nil {
			t.Fatal(err)
		}
		gone := imap.UIDSetNum(20, 21, 4999)
		if err := peer.Store(gone, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}, Silent: true}, nil).Close(); err != nil {
			t.Fatal(err)
		}
		if err := peer.Expunge().Close(); err != nil {
			t.Fatal(err)
		}
		for i := range 25 {
			dv.Deliver(t, annLogin, "INBOX", genMessage(n+i, 300))
		}
		before = v.eng.Stats()
		res, err = v.eng.SyncOnce(ctx, mb.ID)
		if err != nil {
			t.Fatalf("incremental sync = %v", err)
		}
		d := statsDelta(before, v.eng.Stats())
		inbox := res[len(res)-1]
		if inbox.Folder != "INBOX" || inbox.New != 25 || inbox.Deleted != 3 || inbox.Updated != 6 {
			t.Errorf("incremental INBOX sync = %+v; want 25 new, 3 deleted, 6 updated", inbox)
		}
		if d.BodyFetches != 25 || d.RowWrites != 25+3+6 {
			t.Errorf("incremental sync: %d bodies, %d row writes; want 25 and 34", d.BodyFetches, d.RowWrites)
		}
		v.assertConverged(t, peer, mb.ID, "INBOX")

		// UIDVALIDITY reset: Archive deleted and created again.
		oldArchive := v.folderRow(t, mb.ID, "Archive")
		if err := peer.Delete("Archive").Wait(); err != nil {
			t.Fatal(err)
		}
		for i := range 7 {
			dv.Deliver(t, annLogin, "Archive", genMessage(20000+i, 500))
		}
		res, err = v.eng.SyncOnce(ctx, mb.ID)
		if err != nil {
			t.Fatalf("sync after the reset = %v", err)
		}
		if res[0].Folder != "Archive" || !res[0].Reset || res[0].New != 7 || res[0].Deleted != 30 {
			t.Errorf("sync of the recreated Archive = %+v; want a reset, 30 deleted, 7 new", res[0])
		}
		if f := v.folderRow(t, mb.ID, "Archive"); f.UIDValidity == oldArchive.UIDValidity {
			t.Errorf("Archive UIDVALIDITY still %d after the reset", f.UIDValidity)
		}
		v.assertConverged(t, peer, mb.ID, "Archive")

		// And again nothing to do.
		before = v.eng.Stats()
		if _, err := v.eng.SyncOnce(ctx, mb.ID); err != nil {
			t.Fatal(err)
		}
		if d := statsDelta(before, v.eng.Stats()); d.BodyFetches != 0 || d.RowWrites != 0 {
			t.Errorf("final resync: %d body fetches, %d row writes; want 0 and 0", d.BodyFetches, d.RowWrites)
		}
	})
}
