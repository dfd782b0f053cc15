package coordinator

import (
	"context"
	"io"
	"log"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// raftLogger adapts hashicorp/raft's hclog.Logger to log/slog, so raft's
// own messages (elections, lost contact, snapshots) reach the coordinator's
// log instead of being discarded. Messages below min are dropped before
// they are formatted.
type raftLogger struct {
	l    *slog.Logger
	min  slog.Level
	name string
	args []any
}

var _ hclog.Logger = (*raftLogger)(nil)

func newRaftLogger(l *slog.Logger, min slog.Level) *raftLogger {
	return &raftLogger{l: l.With("component", "raft"), min: min, name: "raft"}
}

// slogLevel maps hclog's levels to slog's (Trace is below Debug).
func slogLevel(lv hclog.Level) slog.Level {
	switch lv {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	}
	return slog.LevelInfo
}

func hclogLevel(lv slog.Level) hclog.Level {
	switch {
	case lv < slog.LevelDebug:
		return hclog.Trace
	case lv < slog.LevelInfo:
		return hclog.Debug
	case lv < slog.LevelWarn:
		return hclog.Info
	case lv < slog.LevelError:
		return hclog.Warn
	}
	return hclog.Error
}

func (r *raftLogger) enabled(lv slog.Level) bool {
	return lv >= r.min && r.l.Enabled(context.Background(), lv)
}

func (r *raftLogger) Log(level hclog.Level, msg string, args ...any) {
	lv := slogLevel(level)
	if !r.enabled(lv) {
		return
	}
	all := make([]any, 0, len(r.args)+len(args)+2)
	if r.name != "raft" {
		all = append(all, "logger", r.name)
	}
	all = append(append(all, r.args...), args...)
	r.l.Log(context.Background(), lv, msg, all...)
}

func (r *raftLogger) Trace(msg string, args ...any) { r.Log(hclog.Trace, msg, args...) }
func (r *raftLogger) Debug(msg string, args ...any) { r.Log(hclog.Debug, msg, args...) }
func (r *raftLogger) Info(msg string, args ...any)  { r.Log(hclog.Info, msg, args...) }
func (r *raftLogger) Warn(msg string, args ...any)  { r.Log(hclog.Warn, msg, args...) }
func (r *raftLogger) Error(msg string, args ...any) { r.Log(hclog.Error, msg, args...) }
func (r *raftLogger) IsTrace() bool                 { return r.enabled(slogLevel(hclog.Trace)) }
func (r *raftLogger) IsDebug() bool                 { return r.enabled(slog.LevelDebug) }
func (r *raftLogger) IsInfo() bool                  { return r.enabled(slog.LevelInfo) }
func (r *raftLogger) IsWarn() bool                  { return r.enabled(slog.LevelWarn) }
func (r *raftLogger) IsError() bool                 { return r.enabled(slog.LevelError) }
func (r *raftLogger) ImpliedArgs() []any            { return r.args }
func (r *raftLogger) Name() string                  { return r.name }

func (r *raftLogger) With(args ...any) hclog.Logger {
	c := *r
	c.args = append(append([]any(nil), r.args...), args...)
	return &c
}

func (r *raftLogger) Named(name string) hclog.Logger {
	c := *r
	c.name = r.name + "." + name
	return &c
}

func (r *raftLogger) ResetNamed(name string) hclog.Logger {
	c := *r
	c.name = name
	return &c
}

// SetLevel moves the floor; the slog handler's own level still applies.
func (r *raftLogger) SetLevel(level hclog.Level) { r.min = slogLevel(level) }
func (r *raftLogger) GetLevel() hclog.Level      { return hclogLevel(r.min) }

func (r *raftLogger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(r.StandardWriter(opts), "", 0)
}

func (r *raftLogger) StandardWriter(*hclog.StandardLoggerOptions) io.Writer { return stdWriter{r} }

// stdWriter turns lines from the standard library logger raft may use into
// messages; a "[WARN]"-style prefix sets the level.
type stdWriter struct{ r *raftLogger }

func (w stdWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	level := hclog.Info
	for prefix, lv := range map[string]hclog.Level{"[TRACE]": hclog.Trace, "[DEBUG]": hclog.Debug, "[INFO]": hclog.Info, "[WARN]": hclog.Warn, "[ERR]": hclog.Error, "[ERROR]": hclog.Error} {
		if rest, ok := strings.CutPrefix(msg, prefix); ok {
			level, msg = lv, strings.TrimSpace(rest)
			break
		}
	}
	w.r.Log(level, msg)
	return len(p), nil
}
