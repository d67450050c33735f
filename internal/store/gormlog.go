package store

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// gormLogger sends gorm's messages to slog. Queries are logged with their
// placeholders, never their values.
type gormLogger struct {
	log  *slog.Logger
	slow time.Duration
}

func newGormLogger(log *slog.Logger, slow time.Duration) logger.Interface {
	return &gormLogger{log: log.With("component", "db"), slow: slow}
}

func (l *gormLogger) LogMode(logger.LogLevel) logger.Interface { return l }

func (l *gormLogger) Info(ctx context.Context, msg string, args ...any) {
	l.log.InfoContext(ctx, msg, "args", len(args))
}

func (l *gormLogger) Warn(ctx context.Context, msg string, args ...any) {
	l.log.WarnContext(ctx, msg, "args", len(args))
}

func (l *gormLogger) Error(ctx context.Context, msg string, args ...any) {
	l.log.ErrorContext(ctx, msg, "args", len(args))
}

// ParamsFilter keeps values out of the SQL that Trace receives.
func (l *gormLogger) ParamsFilter(_ context.Context, sql string, _ ...any) (string, []any) {
	return sql, nil
}

func (l *gormLogger) Trace(ctx context.Context, begin time.Time, fc func() (string, int64), err error) {
	elapsed := time.Since(begin)
	switch {
	case err != nil && !errors.Is(err, gorm.ErrRecordNotFound) && !errors.Is(err, context.Canceled):
		sql, rows := fc()
		l.log.DebugContext(ctx, "query failed", "sql", sql, "rows", rows, "elapsed_ms", elapsed.Milliseconds(), "error", err)
	case elapsed > l.slow:
		sql, rows := fc()
		l.log.WarnContext(ctx, "slow query", "sql", sql, "rows", rows, "elapsed_ms", elapsed.Milliseconds())
	case l.log.Enabled(ctx, slog.LevelDebug-4):
		sql, rows := fc()
		l.log.Log(ctx, slog.LevelDebug-4, "query", "sql", sql, "rows", rows, "elapsed_ms", elapsed.Milliseconds())
	}
}
