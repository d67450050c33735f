package api

import (
	"context"
	"net/http"
	"time"
)

// healthz answers while the process is up.
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "version": s.deps.Version})
}

// readyz answers 200 when the database is reachable and migrated, else 503.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.deps.Ready.Ready(ctx); err != nil {
		s.log.WarnContext(ctx, "not ready", "error", err)
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: errorFields{
			Code: "not_ready", Message: "the database is unreachable or not migrated",
		}})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
