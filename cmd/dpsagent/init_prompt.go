package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"charm.land/huh/v2"
	"github.com/spf13/cobra"
)

// wizard asks the questions of `dpsagent init` with huh: forms in a terminal,
// or huh's accessible mode, which prints each prompt as a plain line and reads
// one answer per line (screen readers, serial consoles, scripted answers).
type wizard struct {
	c     *cli
	ctx   context.Context
	in    io.Reader
	out   io.Writer
	lines *lineReader // set in accessible mode
	probe tpmProbe    // the last look at the TPM, for the summary
	close func()      // lets the line reader go
}

func (c *cli) newWizard(cmd *cobra.Command, mode initMode) *wizard {
	ctx, cancel := context.WithCancel(cmd.Context())
	w := &wizard{c: c, ctx: ctx, in: cmd.InOrStdin(), out: c.stdout, close: cancel}
	if mode == modeLines {
		w.lines = newLineReader(w.ctx, w.in)
		w.in = w.lines
	}
	return w
}

var errStopped = errors.New("stopped: nothing written")

// ask shows one step: its title, its help and its fields.
func (w *wizard) ask(title, help string, fields ...huh.Field) error {
	form := huh.NewForm(huh.NewGroup(fields...).Title(title).Description(help)).
		WithInput(w.in).WithOutput(w.out)
	if w.lines != nil {
		// Accessible mode prints only the fields' own titles, so the step's
		// title and help come first; the plain theme keeps colour codes out of
		// a transcript or a screen reader.
		fmt.Fprintf(w.out, "\n%s\n%s\n", title, help)
		form = form.WithAccessible(true).WithTheme(huh.ThemeFunc(huh.ThemeBase))
	}
	err := form.RunWithContext(w.ctx)
	switch {
	case errors.Is(err, huh.ErrUserAborted):
		return withCode(exitFailure, errStopped)
	case err != nil:
		return withCode(exitFailure, fmt.Errorf("ask %q: %w", title, err))
	case w.lines != nil && w.ctx.Err() != nil:
		w.note("")
		return withCode(exitFailure, errStopped)
	case w.lines != nil && w.lines.eof:
		return withCode(exitFailure, fmt.Errorf("stdin ended during %q: %w", title, errStopped))
	}
	return nil
}

// input is a text question checked as it is typed: in a form the line under
// its title says what is wrong with the value so far (or, while it is empty,
// what is expected), and Enter takes only a valid value, showing the whole
// reason otherwise. In accessible mode an empty line keeps the value shown in
// brackets.
func (w *wizard) input(title, expected string, value *string, check func(string) error) *huh.Input {
	in := huh.NewInput().Value(value)
	if w.lines != nil {
		keep := *value
		if keep != "" {
			title += " [" + keep + "]"
		}
		return in.Title(title + ":").Validate(func(s string) error {
			s = strings.TrimSpace(s)
			if s == "" {
				s = keep
			}
			return check(s)
		})
	}
	return in.Title(title).
		Validate(func(s string) error { return check(strings.TrimSpace(s)) }).
		DescriptionFunc(func() string {
			v := strings.TrimSpace(*value)
			switch err := check(v); {
			case v == "":
				return oneLine(expected)
			case err != nil:
				return oneLine("✗ " + err.Error())
			}
			return "✓"
		}, value)
}

// oneLine shortens s to a line that fits an 80-column terminal: huh sizes a
// form when it first draws it, so a line that grew would push the answer out
// of sight. Enter shows the whole reason.
func oneLine(s string) string {
	const max = 72
	if r := []rune(s); len(r) > max {
		return string(r[:max-1]) + "…"
	}
	return s
}

// note prints a line of the wizard's own: what it did or found.
func (w *wizard) note(format string, args ...any) {
	fmt.Fprintf(w.out, format+"\n", args...)
}

// lineReader hands out at most one line per Read. Each of huh's accessible
// prompts reads through a new bufio.Scanner, which would otherwise buffer,
// and lose, the answers to the questions after it. A read also ends when the
// context does: Ctrl+C is a signal, not a key, outside a full-screen form,
// and huh's prompts do not watch the context. It remembers running out of
// input, since the prompts then quietly take their defaults.
type lineReader struct {
	ctx     context.Context
	lines   <-chan []byte
	pending []byte // the rest of the line being read
	eof     bool
}

// newLineReader reads r a line at a time until it ends or ctx does. A read
// from a terminal cannot be taken back, so the last one may wait on until
// the process exits.
func newLineReader(ctx context.Context, r io.Reader) *lineReader {
	lines := make(chan []byte)
	go func() {
		defer close(lines)
		br := bufio.NewReader(r)
		for {
			line, err := br.ReadBytes('\n')
			if len(line) > 0 {
				select {
				case lines <- line:
				case <-ctx.Done():
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	return &lineReader{ctx: ctx, lines: lines}
}

func (l *lineReader) Read(p []byte) (int, error) {
	if len(l.pending) == 0 {
		select {
		case line, ok := <-l.lines:
			if !ok {
				l.eof = true
				return 0, io.EOF
			}
			l.pending = line
		case <-l.ctx.Done():
			l.eof = true
			return 0, io.EOF
		}
	}
	n := copy(p, l.pending)
	l.pending = l.pending[n:]
	return n, nil
}
