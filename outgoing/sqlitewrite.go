package outgoing

import (
	"context"
	"database/sql"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"

	"github.com/mailsync/mailsync/internal/store"
)

// SQLite writes on the outbox's hot paths.
//
// SQLite gives a statement a statement journal — a copy of every page it
// changes, so that a failed statement can be undone inside its transaction
// — when the statement may write several rows and may abort: a multi-row
// INSERT or UPDATE, and also a single-row INSERT … RETURNING (RETURNING is
// built as a trigger). With the pure-Go SQLite the journal's memory was
// mapped and unmapped for every statement; on the outbox's paths it was a
// quarter of serve's CPU (docs/benchmarks.md, "Outbox throughput"). And
// its driver parses every statement anew unless it is prepared. So on
// SQLite these paths write one row per statement, without RETURNING, with
// statements each connection prepares once. PostgreSQL keeps its
// multi-row statements: there each statement is a round trip, and pgx
// caches prepared statements itself.
type sqliteWrites struct {
	db                *store.DB
	outbox, body, log *rowInserter

	mu    sync.Mutex
	stmts map[string]*sql.Stmt // UPDATE texts, one per set of columns
}

// maxCachedStmts bounds sqliteWrites.stmts; the outbox's updates use a
// handful of column sets.
const maxCachedStmts = 64

func newSQLiteWrites(ctx context.Context, db *store.DB) (*sqliteWrites, error) {
	w := &sqliteWrites{db: db, stmts: map[string]*sql.Stmt{}}
	var err error
	if w.outbox, err = newRowInserter(ctx, db, &OutboxMessage{}); err != nil {
		return nil, err
	}
	if w.body, err = newRowInserter(ctx, db, &outboxBody{}); err != nil {
		return nil, err
	}
	if w.log, err = newRowInserter(ctx, db, &LogEntry{}); err != nil {
		return nil, err
	}
	return w, nil
}

// exec runs a prepared statement inside gorm's transaction tx. Outside a
// database/sql transaction it refuses: run on the pool, the statement would
// wait for the write lock the caller's own transaction holds.
func exec(tx *gorm.DB, stmt *sql.Stmt, args ...any) (sql.Result, error) {
	sqlTx, ok := tx.Statement.ConnPool.(*sql.Tx)
	if !ok {
		return nil, fmt.Errorf("outgoing: a prepared write outside a transaction (%T)", tx.Statement.ConnPool)
	}
	ctx := tx.Statement.Context
	return sqlTx.StmtContext(ctx, stmt).ExecContext(ctx, args...)
}

// rowInserter inserts rows of one model with one prepared statement,
// built once from the model's gorm schema: the columns gorm would insert,
// without the RETURNING it adds on SQLite and without its per-row
// callbacks. Like gorm, it fills zero created/updated times with the
// current time and sets an autoincrement primary key from the driver's
// last insert id.
type rowInserter struct {
	stmt   *sql.Stmt
	fields []*schema.Field
	id     *schema.Field // the autoincrement primary key, if any
}

func newRowInserter(ctx context.Context, db *store.DB, model any) (*rowInserter, error) {
	table, fields, id, err := insertFields(db.Gorm, model)
	if err != nil {
		return nil, err
	}
	ri := &rowInserter{fields: fields, id: id}
	cols, marks := make([]string, len(fields)), make([]string, len(fields))
	for i, f := range fields {
		cols[i], marks[i] = f.DBName, "?"
	}
	q := "INSERT INTO " + table + " (" + strings.Join(cols, ", ") + ") VALUES (" + strings.Join(marks, ", ") + ")"
	if ri.stmt, err = db.Prepare(ctx, q); err != nil {
		return nil, fmt.Errorf("prepare insert into %s: %w", table, err)
	}
	return ri, nil
}

// insertFields returns model's table, the columns gorm would insert for it
// except an autoincrement primary key, and that key (nil if none).
func insertFields(db *gorm.DB, model any) (table string, fields []*schema.Field, id *schema.Field, err error) {
	st := &gorm.Statement{DB: db}
	if err := st.Parse(model); err != nil {
		return "", nil, nil, fmt.Errorf("parse %T: %w", model, err)
	}
	for _, f := range st.Schema.Fields {
		if f.DBName == "" || !f.Creatable {
			continue
		}
		if f.PrimaryKey && f.AutoIncrement {
			id = f
			continue
		}
		fields = append(fields, f)
	}
	return st.Schema.Table, fields, id, nil
}

var timeType = reflect.TypeFor[time.Time]()

// insertValue returns f's value in rv, the row being inserted; like gorm,
// a zero created or updated time is first set to now.
func insertValue(ctx context.Context, f *schema.Field, rv reflect.Value, now time.Time) (any, error) {
	v, zero := f.ValueOf(ctx, rv)
	if zero && (f.AutoCreateTime != 0 || f.AutoUpdateTime != 0) && f.FieldType == timeType {
		if err := f.Set(ctx, rv, now); err != nil {
			return nil, err
		}
		v = now
	}
	return v, nil
}

// insert inserts row, a pointer to the model, inside tx.
func (ri *rowInserter) insert(tx *gorm.DB, row any) error {
	ctx := tx.Statement.Context
	rv := reflect.ValueOf(row).Elem()
	args := make([]any, len(ri.fields))
	now := tx.NowFunc()
	for i, f := range ri.fields {
		v, err := insertValue(ctx, f, rv, now)
		if err != nil {
			return err
		}
		args[i] = v
	}
	res, err := exec(tx, ri.stmt, args...)
	if err != nil {
		return err
	}
	if ri.id != nil {
		id, err := res.LastInsertId()
		if err != nil {
			return err
		}
		return ri.id.Set(ctx, rv, id)
	}
	return nil
}

// updateRow sets cols (columns to values or clause.Expr) on one outbox
// row, held by owner when owner is not empty; it reports whether the row
// was updated.
func (w *sqliteWrites) updateRow(tx *gorm.DB, id int64, owner string, cols map[string]any) (bool, error) {
	names := make([]string, 0, len(cols))
	for c := range cols {
		names = append(names, c)
	}
	slices.Sort(names) // one statement text per set of columns
	var b strings.Builder
	args := make([]any, 0, len(names)+2)
	b.WriteString("UPDATE outbox SET ")
	for i, c := range names {
		if i > 0 {
			b.WriteString(", ")
		}
		if e, ok := cols[c].(clause.Expr); ok {
			b.WriteString(c + " = " + e.SQL)
			args = append(args, e.Vars...)
			continue
		}
		b.WriteString(c + " = ?")
		args = append(args, cols[c])
	}
	b.WriteString(" WHERE id = ?")
	args = append(args, id)
	if owner != "" {
		b.WriteString(" AND lease_owner = ?")
		args = append(args, owner)
	}
	stmt, err := w.prepared(tx.Statement.Context, b.String())
	if err != nil {
		return false, err
	}
	res, err := exec(tx, stmt, args...)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// prepared returns query prepared on the pool, kept for next time while
// there is room.
func (w *sqliteWrites) prepared(ctx context.Context, query string) (*sql.Stmt, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if s, ok := w.stmts[query]; ok {
		return s, nil
	}
	s, err := w.db.Prepare(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("prepare %q: %w", query, err)
	}
	if len(w.stmts) < maxCachedStmts {
		w.stmts[query] = s
	}
	return s, nil
}
