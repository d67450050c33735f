package outgoing

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/store/storetest"
	"gorm.io/gorm"
)

// TestRowInserterRoundTrip: a row written by the prepared single-row
// INSERT reads back through gorm field for field (so its column list is
// the model's), its id comes from the database, and zero created/updated
// times are filled in as gorm does.
func TestRowInserterRoundTrip(t *testing.T) {
	db := storetest.Open(t, store.SQLite)
	ctx := context.Background()
	s := NewService(Deps{DB: db}, Config{})
	if s.sqlite == nil {
		t.Fatal("no single-row writes on SQLite")
	}
	uid := int64(0)
	if err := db.Gorm.Exec("INSERT INTO users (name, email, created_at) VALUES ('u', 'u@example.com', ?)", time.Now()).Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Gorm.Raw("SELECT id FROM users WHERE email = 'u@example.com'").Scan(&uid).Error; err != nil || uid == 0 {
		t.Fatalf("user id %d, %v", uid, err)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	later := now.Add(time.Hour)
	m := &OutboxMessage{
		MessageID: "<rt@example.com>", UserID: &uid, RouteKind: KindSystem, RouteID: 7, FromAddr: "a@example.com",
		EnvelopeFrom: "bounce@example.com", Recipients: `["b@example.com"]`, Subject: "Ünïcode subject", Size: 42,
		Status: StatusQueued, Attempts: 2, UnknownCount: 1, NextAttemptAt: &now, LeaseOwner: "w", LeaseUntil: &later,
		LastStep: "rcpt", LastCode: 451, LastReply: "4.7.1 try later", LastError: "e", CrmEntityType: "deal",
		CrmEntityID: "12", SentCopy: "skipped: none",
	}
	var logEntry LogEntry
	err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := s.sqlite.outbox.insert(tx, m); err != nil {
			return err
		}
		if err := s.sqlite.body.insert(tx, &outboxBody{OutboxID: m.ID, Raw: []byte("raw bytes")}); err != nil {
			return err
		}
		logEntry = LogEntry{OutboxID: m.ID, MessageID: m.MessageID, UserID: &uid, RouteKind: KindSystem, RouteID: 7,
			FromAddr: "a@example.com", Recipients: `["b@example.com"]`, Status: LogSent, Code: 250, DurationMS: 3}
		return s.sqlite.log.insert(tx, &logEntry)
	})
	if err != nil {
		t.Fatal(err)
	}
	if m.ID == 0 || logEntry.ID == 0 {
		t.Fatalf("ids not set: outbox %d, log %d", m.ID, logEntry.ID)
	}
	if m.CreatedAt.IsZero() || m.UpdatedAt.IsZero() || logEntry.CreatedAt.IsZero() {
		t.Errorf("zero times not filled: %v %v %v", m.CreatedAt, m.UpdatedAt, logEntry.CreatedAt)
	}
	var got OutboxMessage
	if err := db.Gorm.First(&got, m.ID).Error; err != nil {
		t.Fatal(err)
	}
	want := *m
	for _, p := range []*time.Time{&want.CreatedAt, &want.UpdatedAt, &got.CreatedAt, &got.UpdatedAt} {
		*p = p.UTC().Truncate(time.Millisecond)
	}
	for _, p := range []**time.Time{&want.NextAttemptAt, &want.LeaseUntil, &got.NextAttemptAt, &got.LeaseUntil} {
		v := (*p).UTC()
		*p = &v
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("read back:\n got %+v\nwant %+v", got, want)
	}
	var body outboxBody
	if err := db.Gorm.First(&body, "outbox_id = ?", m.ID).Error; err != nil || string(body.Raw) != "raw bytes" {
		t.Errorf("body %q, %v", body.Raw, err)
	}
	var gotLog LogEntry
	if err := db.Gorm.First(&gotLog, logEntry.ID).Error; err != nil || gotLog.OutboxID != m.ID || gotLog.Code != 250 || gotLog.Status != LogSent {
		t.Errorf("log entry %+v, %v", gotLog, err)
	}
}

// TestPreparedWriteNeedsTransaction: outside a transaction the prepared
// writes refuse instead of waiting for a lock their caller holds.
func TestPreparedWriteNeedsTransaction(t *testing.T) {
	db := storetest.Open(t, store.SQLite)
	s := NewService(Deps{DB: db}, Config{})
	err := s.sqlite.log.insert(db.WithContext(context.Background()), &LogEntry{MessageID: "<x@example.com>"})
	if err == nil {
		t.Fatal("insert outside a transaction: no error")
	}
}
