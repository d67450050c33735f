package outgoing

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/mailsync/mailsync/internal/store"
)

// SQLite writes on the outbox's hot paths.
//
// SQLite gives a statement a statement journal — a copy of every page it
// changes, so that a failed statement can be undone inside its transaction
// — when the statement may write several rows and may abort: a multi-row
// INSERT or UPDATE, and also a single-row INSERT … RETURNING (RETURNING is
// built as a trigger). With the pure-Go SQLite the journal's memory is
// mapped and unmapped for every statement; on the outbox's paths it was a
// quarter of serve's CPU (docs/benchmarks.md, "Outbox throughput"). So on
// SQLite these paths write one row per statement, without RETURNING, with
// statements prepared once per connection (store.DB.Prepared). PostgreSQL
// keeps its multi-row statements: there each statement is a round trip.

// hotSession starts the outbox's hot-path statements: with statements
// prepared once per connection on SQLite.
func hotSession(ctx context.Context, db *store.DB) *gorm.DB {
	if db.Dialect == store.SQLite {
		return db.Prepared(ctx)
	}
	return db.WithContext(ctx)
}

// insertRow inserts one row of a model whose primary key is an
// autoincrement "id" and sets the ID from the driver's last insert id:
// gorm's own SQL for the row, without the RETURNING it adds on SQLite.
func insertRow(tx *gorm.DB, row any, setID func(int64)) error {
	st := tx.Session(&gorm.Session{DryRun: true}).Create(row).Statement
	if st.Error != nil {
		return st.Error
	}
	q, ok := strings.CutSuffix(st.SQL.String(), " RETURNING `id`")
	if !ok {
		return fmt.Errorf("insert %s: unexpected statement %q", st.Table, q)
	}
	res, err := tx.Statement.ConnPool.ExecContext(tx.Statement.Context, q, st.Vars...)
	if err != nil {
		return fmt.Errorf("insert %s: %w", st.Table, err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return fmt.Errorf("insert %s: %w", st.Table, err)
	}
	setID(id)
	return nil
}

// updateRow sets cols (columns to values) on one outbox row, held by
// owner when owner is not empty; it reports whether the row was updated.
func updateRow(tx *gorm.DB, id int64, owner string, cols map[string]any) (bool, error) {
	names := make([]string, 0, len(cols))
	for c := range cols {
		names = append(names, c)
	}
	slices.Sort(names) // one statement text, so one prepared statement, per set of columns
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
	res, err := tx.Statement.ConnPool.ExecContext(tx.Statement.Context, b.String(), args...)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}
