package main

import (
	"fmt"
	"io"
	"sync"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// stepCore shows a foreground command's progress on a terminal as live
// steps: the step under way on its own line ("… registering with DPS"),
// ticked when the next one starts, warnings and errors kept in plain sight.
// Details stay out of the way; -v shows the full log instead.
type stepCore struct {
	mu      sync.Mutex
	w       io.Writer
	pending string
	zapcore.LevelEnabler
}

func newStepCore(w io.Writer) *stepCore { return &stepCore{w: w, LevelEnabler: zapcore.InfoLevel} }

func (s *stepCore) With([]zapcore.Field) zapcore.Core { return s }

func (s *stepCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if s.Enabled(e.Level) {
		return ce.AddCore(e, s)
	}
	return ce
}

func (s *stepCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.Level >= zapcore.WarnLevel {
		s.settle("✓")
		detail := ""
		for _, f := range fields {
			if f.Key == "error" || f.Key == "hint" {
				if err, ok := f.Interface.(error); ok {
					detail += "\n    " + err.Error()
				} else if f.String != "" {
					detail += "\n    " + f.String
				}
			}
		}
		fmt.Fprintf(s.w, "! %s%s\n", e.Message, detail)
		return nil
	}
	s.settle("✓")
	s.pending = e.Message
	fmt.Fprintf(s.w, "… %s", e.Message)
	return nil
}

// settle ends the pending step's line with mark.
func (s *stepCore) settle(mark string) {
	if s.pending != "" {
		fmt.Fprintf(s.w, "\r\033[K%s %s\n", mark, s.pending)
		s.pending = ""
	}
}

// finish closes the last step as done or failed.
func (s *stepCore) finish(ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ok {
		s.settle("✓")
	} else {
		s.settle("✗")
	}
}

func (s *stepCore) Sync() error { return nil }

// stepLogger is the logger for a foreground command: live steps on a
// terminal (unless -v or JSON), the ordinary log otherwise.
func (c *cli) stepLogger() (*zap.Logger, func(ok bool)) {
	if c.verbose || c.logFormat == "json" || !isTerminal(c.stderr) {
		return c.logger(), func(bool) {}
	}
	core := newStepCore(c.stderr)
	return zap.New(core), core.finish
}
