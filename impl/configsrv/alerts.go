package configsrv

import (
	"time"

	"github.com/v2a-dr/v2a/impl/runtime"
)

// alert is one raising of a condition. A condition is raised once while it
// lasts; when it ends the alert is cleared (kept, with both times), and a
// later recurrence is a new alert.
type alert struct {
	name    string
	subject string // machine or process server
	detail  string
	raised  time.Time
	cleared time.Time
}

func (s *Server) activeAlert(name, subject string) *alert {
	for _, a := range s.alerts {
		if a.name == name && a.subject == subject && a.cleared.IsZero() {
			return a
		}
	}
	return nil
}

// raise raises an alert unless the same one is active.
func (s *Server) raise(ctx runtime.Context, name, subject, detail string) {
	if s.activeAlert(name, subject) != nil {
		return
	}
	s.alerts = append(s.alerts, &alert{name: name, subject: subject, detail: detail, raised: ctx.Now()})
	ctx.Log().Warn("configsrv: alert raised", "alert", name, "subject", subject, "detail", detail)
}

// clear clears an active alert; nothing happens when none is active.
func (s *Server) clear(ctx runtime.Context, name, subject string) {
	a := s.activeAlert(name, subject)
	if a == nil {
		return
	}
	a.cleared = ctx.Now()
	ctx.Log().Info("configsrv: alert cleared", "alert", name, "subject", subject)
}
