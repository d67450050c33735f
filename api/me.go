package api

import (
	"net/http"
	"time"

	"github.com/mailsync/mailsync/internal/users"
)

// userJSON is a user on the wire.
type userJSON struct {
	ID        int64     `json:"id"`
	Email     string    `json:"email"`
	Name      string    `json:"name"`
	Admin     bool      `json:"admin"`
	CreatedAt time.Time `json:"created_at"`
}

func toUserJSON(u users.User) userJSON {
	return userJSON{ID: u.ID, Email: u.Email, Name: u.Name, Admin: u.Admin, CreatedAt: u.CreatedAt}
}

// me answers GET /api/v1/me: the caller.
func (s *Server) me(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, toUserJSON(caller(r)))
	return nil
}
