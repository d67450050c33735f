package outgoing

import (
	"context"
	"fmt"
	"reflect"
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/schema"

	"github.com/mailsync/mailsync/internal/store"
)

// PostgreSQL's hot writes: one statement, one round trip each.
//
// A group commit used to be BEGIN, INSERT … RETURNING id, INSERT of the
// bodies, COMMIT: four round trips to the server, each a wait for its
// process to be scheduled. On a busy machine the leader spent most of its
// time waiting there, and every submission waited behind it
// (docs/benchmarks.md, "Outbox throughput"). Now the ids are taken ahead
// from the table's sequence, a block at a time, so the rows and their
// bodies go in one statement —
//
//	WITH m AS (INSERT INTO outbox (id, …) VALUES …) INSERT INTO outbox_bodies … VALUES …
//
// — which PostgreSQL runs as one transaction: both tables or neither.
// The bodies' foreign key is checked at the end of the statement, when the
// rows are there.
type pgInserts struct {
	outbox, body []*schema.Field // the columns written, the outbox's id first
	log          []*schema.Field // send_log's, without its id (the database's)
	ids          []int64         // taken from the sequence, not used yet
}

// pgIDBlock is how many ids one trip to the sequence takes. Those a
// stopping instance has not used are skipped: gaps, as a sequence's own
// cache leaves. With several instances, ids no longer follow the order of
// the commits (nothing reads them as a cursor: claims go by
// next_attempt_at, the send log's cursor is its own id).
const pgIDBlock = 256

func newPGInserts(db *gorm.DB) (*pgInserts, error) {
	p := &pgInserts{}
	_, fields, id, err := insertFields(db, &OutboxMessage{})
	if err != nil {
		return nil, err
	}
	if id == nil {
		return nil, fmt.Errorf("outbox: no autoincrement primary key in the model")
	}
	p.outbox = append([]*schema.Field{id}, fields...)
	if _, p.body, _, err = insertFields(db, &outboxBody{}); err != nil { // its key is the message's id
		return nil, err
	}
	if _, p.log, _, err = insertFields(db, &LogEntry{}); err != nil {
		return nil, err
	}
	return p, nil
}

// takeIDs returns n ids from the outbox's sequence. Only the group
// commit's leader calls it (one at a time).
func (p *pgInserts) takeIDs(ctx context.Context, db *store.DB, n int) ([]int64, error) {
	if len(p.ids) < n {
		want := max(pgIDBlock, n-len(p.ids))
		var more []int64
		err := db.WithContext(ctx).Raw("SELECT nextval(pg_get_serial_sequence('outbox', 'id')) FROM generate_series(1, ?)", want).
			Scan(&more).Error
		if err != nil {
			return nil, fmt.Errorf("outbox ids: %w", err)
		}
		if len(more) != want {
			return nil, fmt.Errorf("outbox ids: %d from the sequence, want %d", len(more), want)
		}
		p.ids = append(p.ids, more...)
	}
	ids := p.ids[:n:n]
	p.ids = p.ids[n:]
	return ids, nil
}

// write inserts rows and their bodies in one statement,
// setting each row's ID and, where zero, its created and updated times.
// The caller resets the IDs when it fails.
func (p *pgInserts) write(ctx context.Context, db *store.DB, rows []*OutboxMessage) error {
	ids, err := p.takeIDs(ctx, db, len(rows))
	if err != nil {
		return err
	}
	now := db.Gorm.NowFunc()
	var b strings.Builder
	args := make([]any, 0, len(rows)*(len(p.outbox)+len(p.body)))
	values := func(fields []*schema.Field, rv reflect.Value) error {
		b.WriteString("(")
		for i, f := range fields {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("?")
			v, err := insertValue(ctx, f, rv, now)
			if err != nil {
				return err
			}
			args = append(args, v)
		}
		b.WriteString(")")
		return nil
	}
	names := func(fields []*schema.Field) string {
		s := make([]string, len(fields))
		for i, f := range fields {
			s[i] = f.DBName
		}
		return strings.Join(s, ", ")
	}
	b.WriteString("WITH m AS (INSERT INTO outbox (" + names(p.outbox) + ") VALUES ")
	for i, m := range rows {
		m.ID = ids[i]
		if i > 0 {
			b.WriteString(", ")
		}
		if err := values(p.outbox, reflect.ValueOf(m).Elem()); err != nil {
			return err
		}
	}
	b.WriteString(") INSERT INTO outbox_bodies (" + names(p.body) + ") VALUES ")
	for i, m := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		body := newOutboxBody(m)
		if err := values(p.body, reflect.ValueOf(&body).Elem()); err != nil {
			return err
		}
	}
	return db.WithContext(ctx).Exec(b.String(), args...).Error
}

// outcomes records a batch of send outcomes in one statement: the UPDATE
// of the rows whose lease owner still holds them, and the send-log entries
// — an entry whose row had changed hands says so in its reply —
//
//	WITH upd AS (UPDATE outbox SET … WHERE lease_owner = … AND id IN (…) RETURNING id)
//	INSERT INTO send_log … VALUES (…, CASE WHEN EXISTS (SELECT 1 FROM upd WHERE id = …) THEN … ELSE … END, …)
//
// one round trip and one transaction, where a transaction with a locking
// SELECT, the UPDATE and the INSERT took five.
func (p *pgInserts) outcomes(ctx context.Context, db *store.DB, batch []outcome, owner string) error {
	update, args := outcomeUpdate(batch, owner)
	var b strings.Builder
	b.WriteString("WITH upd AS (" + update + " RETURNING id) INSERT INTO send_log (")
	for i, f := range p.log {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(f.DBName)
	}
	b.WriteString(") VALUES ")
	now := db.Gorm.NowFunc()
	for i := range batch {
		e := &batch[i].entry
		rv := reflect.ValueOf(e).Elem()
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(")
		for j, f := range p.log {
			if j > 0 {
				b.WriteString(", ")
			}
			if f.DBName == "reply" {
				b.WriteString("CASE WHEN EXISTS (SELECT 1 FROM upd WHERE upd.id = ?) THEN ? ELSE ? END")
				args = append(args, e.OutboxID, e.Reply, leaseLostReply+e.Reply)
				continue
			}
			v, err := insertValue(ctx, f, rv, now)
			if err != nil {
				return err
			}
			b.WriteString("?")
			args = append(args, v)
		}
		b.WriteString(")")
	}
	return db.WithContext(ctx).Exec(b.String(), args...).Error
}
