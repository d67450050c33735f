package outgoing

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/mailsync/mailsync/internal/apperr"
)

// LogEntry is one sending attempt.
type LogEntry struct {
	ID            int64
	OutboxID      int64
	MessageID     string
	UserID        *int64
	RouteKind     string
	RouteID       int64
	AccountEmail  string
	FromAddr      string
	Recipients    string // JSON array
	Subject       string
	Status        string // sent, retry, failed, unknown
	Step          string
	Code          int
	Reply         string
	DurationMS    int64
	CrmEntityType string
	CrmEntityID   string
	CreatedAt     time.Time
}

// TableName maps LogEntry to its table.
func (LogEntry) TableName() string { return "send_log" }

// Log statuses, one per attempt.
const (
	LogSent    = "sent"
	LogRetry   = "retry"
	LogFailed  = "failed"
	LogUnknown = "unknown"
)

// LogFilter selects send-log entries.
type LogFilter struct {
	Status    string
	RouteKind string // with RouteID: one account
	RouteID   int64
	From      string
	Since     *time.Time
	Until     *time.Time
	CRM       *CRMRef
	Cursor    string // from the previous page
	Limit     int    // 1–500, default 50
}

// ListLog returns entries newest first, and the cursor of the next page ("" at
// the end). Users see their own entries, admins all.
func (s *Service) ListLog(ctx context.Context, c Caller, f LogFilter) ([]LogEntry, string, error) {
	if f.Limit == 0 {
		f.Limit = 50
	}
	if f.Limit < 1 || f.Limit > 500 {
		return nil, "", apperr.Invalid("limit", "out_of_range", "limit must be between 1 and 500")
	}
	q := s.db.WithContext(ctx).Model(&LogEntry{})
	if !c.Admin {
		q = q.Where("user_id = ?", c.UserID)
	}
	switch f.Status {
	case "", LogSent, LogRetry, LogFailed, LogUnknown:
	default:
		return nil, "", apperr.Invalid("status", "invalid_choice", "status must be sent, retry, failed or unknown")
	}
	if f.Status != "" {
		q = q.Where("status = ?", f.Status)
	}
	if f.RouteKind != "" {
		q = q.Where("route_kind = ? AND route_id = ?", f.RouteKind, f.RouteID)
	}
	if f.From != "" {
		q = q.Where("lower(from_addr) = lower(?)", f.From)
	}
	if f.Since != nil {
		q = q.Where("created_at >= ?", f.Since.UTC())
	}
	if f.Until != nil {
		q = q.Where("created_at < ?", f.Until.UTC())
	}
	if f.CRM != nil {
		q = q.Where("crm_entity_type = ? AND crm_entity_id = ?", f.CRM.EntityType, f.CRM.EntityID)
	}
	if f.Cursor != "" {
		before, err := strconv.ParseInt(f.Cursor, 10, 64)
		if err != nil || before <= 0 {
			return nil, "", apperr.Invalid("cursor", "invalid_cursor", "the cursor is not one this API returned")
		}
		q = q.Where("id < ?", before)
	}
	var out []LogEntry
	if err := q.Order("id DESC").Limit(f.Limit + 1).Find(&out).Error; err != nil {
		return nil, "", fmt.Errorf("list send log: %w", err)
	}
	next := ""
	if len(out) > f.Limit {
		out = out[:f.Limit]
		next = strconv.FormatInt(out[len(out)-1].ID, 10)
	}
	return out, next, nil
}
