package web

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/outgoing"
)

// The send log: one row per sending attempt, newest first, with filters
// (status, sender address, account, dates, CRM record) and paging by
// cursor. Users see their own attempts, admins all.

type logRow struct {
	outgoing.LogEntry
	RecipientList []string
}

type sendLogView struct {
	Entries  []logRow
	Form     *formState
	Accounts []outgoing.Account // the account filter's choices (admins)
	Next     string             // the next page's URL, "" on the last
	First    string             // the first page's URL, "" on the first
	Error    string
}

func (s *server) sendLog(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	q := r.URL.Query()
	f := newForm()
	for _, k := range []string{"status", "from", "account", "since", "until", "crm_type", "crm_id", "limit"} {
		if v := strings.TrimSpace(q.Get(k)); v != "" {
			f.Values.Set(k, v)
		}
	}
	view := sendLogView{Form: f}
	if rc.user.Admin {
		as, err := s.deps.Outgoing.ListAccounts(r.Context())
		if err != nil {
			return err
		}
		view.Accounts = as
	}
	filter := outgoing.LogFilter{Status: f.Get("status"), From: f.Get("from"), Cursor: q.Get("cursor"), Limit: 50}
	status := http.StatusOK
	bad := func(field, key string) {
		f.Errors[field] = rc.T(key)
		f.Summary = rc.T("form.fix")
		status = http.StatusBadRequest
	}
	if v := f.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 500 {
			bad("limit", "error.invalid_number")
		} else {
			filter.Limit = n
		}
	}
	if v := f.Get("account"); v != "" {
		id, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			bad("account", "error.invalid_number")
		} else {
			filter.RouteKind, filter.RouteID = outgoing.KindSystem, id
		}
	}
	for name, dst := range map[string]**time.Time{"since": &filter.Since, "until": &filter.Until} {
		if v := f.Get(name); v != "" {
			t, err := time.Parse("2006-01-02", v)
			if err != nil {
				bad(name, "error.invalid_date")
				continue
			}
			if name == "until" {
				t = t.Add(24 * time.Hour) // through the end of that day
			}
			*dst = &t
		}
	}
	if et, eid := f.Get("crm_type"), f.Get("crm_id"); et != "" || eid != "" {
		filter.CRM = &outgoing.CRMRef{EntityType: et, EntityID: eid}
	}
	if status == http.StatusOK {
		entries, next, err := s.deps.Outgoing.ListLog(r.Context(), rc.caller(), filter)
		if err != nil {
			if e, ok := apperr.As(err); ok && e.Field != "" {
				field := e.Field
				if field == "cursor" {
					field = "limit"
				}
				f.Errors[field] = errorText(rc.lang, e)
				f.Summary = rc.T("form.fix")
				status = http.StatusBadRequest
			} else {
				return err
			}
		}
		for _, e := range entries {
			view.Entries = append(view.Entries, logRow{LogEntry: e,
				RecipientList: outgoing.OutboxMessage{Recipients: e.Recipients}.RecipientList()})
		}
		if next != "" {
			view.Next = logURL(f.Values, next)
		}
		if filter.Cursor != "" {
			view.First = logURL(f.Values, "")
		}
	}
	return s.render(w, r, rc, status, "sendlog", "log.title", view)
}

func logURL(filters url.Values, cursor string) string {
	q := url.Values{}
	for k, v := range filters {
		q[k] = v
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if len(q) == 0 {
		return "/log"
	}
	return "/log?" + q.Encode()
}
