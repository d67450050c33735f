package api

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strconv"

	"github.com/mailsync/mailsync/internal/apperr"
)

// errorBody is the one shape of every API error.
type errorBody struct {
	Error errorFields `json:"error"`
}

type errorFields struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
	Detail  any    `json:"detail,omitempty"`
}

// errMethod is the kind of a request whose path exists under other methods.
var errMethod = errors.New("method not allowed")

// statusOf maps error kinds to HTTP statuses: the one place that does.
func statusOf(err error) int {
	switch {
	case errors.Is(err, apperr.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, apperr.ErrUnauthenticated):
		return http.StatusUnauthorized
	case errors.Is(err, apperr.ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, errMethod):
		return http.StatusMethodNotAllowed
	case errors.Is(err, apperr.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, apperr.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, apperr.ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, apperr.ErrUnprocessable):
		return http.StatusUnprocessableEntity
	case errors.Is(err, apperr.ErrRateLimited):
		return http.StatusTooManyRequests
	case errors.Is(err, apperr.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// writeError answers err in the error shape. An error that is not an
// *apperr.Error is internal: the client gets a generic message and the log
// gets the detail.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status := statusOf(err)
	body := errorFields{Code: "internal", Message: "internal error; the server log has the details"}
	if e, ok := apperr.As(err); ok && status != http.StatusInternalServerError {
		body = errorFields{Code: e.Code, Message: e.Message, Field: e.Field, Detail: e.Detail}
		if e.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(e.RetryAfter.Seconds()))))
		}
		if e.Err != nil {
			s.log.DebugContext(r.Context(), "request refused", "route", routeOf(r), "code", e.Code, "error", e.Err)
		}
	} else if status == http.StatusServiceUnavailable {
		body = errorFields{Code: "unavailable", Message: "the service is temporarily unavailable; try again"}
		s.log.WarnContext(r.Context(), "request failed", "route", routeOf(r), "error", err)
	} else {
		s.log.ErrorContext(r.Context(), "request failed", "route", routeOf(r), "error", err)
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="mailsync"`)
	}
	writeJSON(w, status, errorBody{Error: body})
}

func routeOf(r *http.Request) string {
	if r.Pattern != "" {
		return r.Pattern
	}
	return "unmatched"
}
