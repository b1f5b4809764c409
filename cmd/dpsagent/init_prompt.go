package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
)

// wizard asks the questions of `dpsagent init` as plain lines: a prompt, an
// answer, Enter. That works on a serial console, over any terminal, with a
// screen reader and with answers scripted on stdin, and it costs no terminal
// library (a full-screen form library weighed 2 MiB of a gateway binary and
// could lose keys typed while one form gave way to the next).
type wizard struct {
	c     *cli
	ctx   context.Context
	out   io.Writer
	lines *lineReader
	// echo repeats each answer after its prompt when stdin is not a terminal
	// (a terminal shows what is typed itself), so that a transcript of
	// scripted answers reads as a conversation.
	echo  bool
	probe tpmProbe // the last look at the TPM, for the summary
	close func()   // lets the line reader go
}

func (c *cli) newWizard(cmd *cobra.Command) *wizard {
	ctx, cancel := context.WithCancel(cmd.Context())
	in := cmd.InOrStdin()
	return &wizard{
		c: c, ctx: ctx, out: c.stdout, close: cancel,
		lines: newLineReader(ctx, in),
		echo:  !isTerminal(in),
	}
}

var errStopped = errors.New("stopped: nothing written")

// promptField is one question of a step.
type promptField interface {
	// prompt is what is printed before the answer.
	prompt() string
	// take judges an answer (trimmed; "" is Enter alone) and keeps it, or
	// says what is wrong with it.
	take(answer string) error
}

// ask shows one step, its title and its help, then asks each field until it
// has a valid answer.
func (w *wizard) ask(title, help string, fields ...promptField) error {
	fmt.Fprintf(w.out, "\n%s\n%s\n", title, help)
	for _, f := range fields {
		for {
			fmt.Fprint(w.out, f.prompt())
			answer, err := w.lines.next()
			switch {
			case errors.Is(err, errLongLine):
				if w.echo {
					w.note("")
				}
				w.note("  ✗ %v", err)
				continue
			case errors.Is(err, io.EOF) && w.ctx.Err() == nil:
				w.note("")
				return withCode(exitFailure, fmt.Errorf("stdin ended during %q: %w", title, errStopped))
			case errors.Is(err, errNoLineEnd):
				w.note("")
				return withCode(exitFailure, fmt.Errorf("%w during %q: %w", err, title, errStopped))
			case err != nil:
				w.note("")
				return withCode(exitFailure, errStopped)
			}
			if w.echo {
				w.note("%s", answer)
			}
			if err := f.take(strings.TrimSpace(answer)); err != nil {
				w.note("  ✗ %v", err)
				continue
			}
			break
		}
	}
	return nil
}

// note prints a line of the wizard's own: what it did or found.
func (w *wizard) note(format string, args ...any) {
	fmt.Fprintf(w.out, format+"\n", args...)
}

// textField is a text question; Enter alone keeps the value shown in
// brackets, and - alone clears it (if check takes an empty value).
type textField struct {
	title string
	value *string
	check func(string) error
}

// input is a text question whose answer check judges.
func (w *wizard) input(title string, value *string, check func(string) error) promptField {
	return &textField{title: title, value: value, check: check}
}

func (f *textField) prompt() string {
	if *f.value != "" {
		return f.title + " [" + *f.value + "]: "
	}
	return f.title + ": "
}

func (f *textField) take(answer string) error {
	switch answer {
	case "":
		answer = *f.value
	case "-":
		answer = ""
	}
	if err := f.check(answer); err != nil {
		return err
	}
	*f.value = answer
	return nil
}

// confirmField is a yes-or-no question; Enter alone keeps the value shown in
// capitals.
type confirmField struct {
	title string
	value *bool
}

func (w *wizard) confirm(title string, value *bool) promptField {
	return &confirmField{title: title, value: value}
}

func (f *confirmField) prompt() string {
	if *f.value {
		return f.title + " [Y/n] "
	}
	return f.title + " [y/N] "
}

func (f *confirmField) take(answer string) error {
	switch strings.ToLower(answer) {
	case "":
	case "y", "yes":
		*f.value = true
	case "n", "no":
		*f.value = false
	default:
		return fmt.Errorf("%q: answer y (yes) or n (no)", answer)
	}
	return nil
}

// choice is one option of a chooseField: what it says and the value it sets.
type choice struct{ label, value string }

// chooseField lists numbered options and takes a number; Enter alone keeps
// the current one.
type chooseField struct {
	title   string
	choices []choice
	value   *string
}

func (w *wizard) choose(title string, value *string, choices ...choice) promptField {
	return &chooseField{title: title, choices: choices, value: value}
}

// current is the number of the option the value is at, or 0.
func (f *chooseField) current() int {
	for i, c := range f.choices {
		if c.value == *f.value {
			return i + 1
		}
	}
	return 0
}

func (f *chooseField) prompt() string {
	var b strings.Builder
	b.WriteString(f.title)
	if !strings.HasSuffix(f.title, "?") {
		b.WriteString(":")
	}
	b.WriteString("\n")
	for i, c := range f.choices {
		fmt.Fprintf(&b, "  %d. %s\n", i+1, c.label)
	}
	fmt.Fprintf(&b, "Choose 1 to %d", len(f.choices))
	if n := f.current(); n > 0 {
		fmt.Fprintf(&b, " [%d]", n)
	}
	b.WriteString(": ")
	return b.String()
}

func (f *chooseField) take(answer string) error {
	if answer == "" && f.current() > 0 {
		return nil
	}
	n, err := strconv.Atoi(answer)
	if err != nil || n < 1 || n > len(f.choices) {
		return fmt.Errorf("%q: enter a number from 1 to %d", answer, len(f.choices))
	}
	*f.value = f.choices[n-1].value
	return nil
}

// maxAnswer bounds an answer line: nobody types more, and stdin that is not
// typed (< /dev/zero) must not fill the memory of a small gateway.
const maxAnswer = 4096

// maxSkip bounds what is skipped of a line over maxAnswer: stdin that sends
// that much without a line break is not answers.
const maxSkip = 1 << 20

var (
	errLongLine  = fmt.Errorf("the answer is over %d bytes: refused; type a shorter one", maxAnswer)
	errNoLineEnd = fmt.Errorf("stdin sent over %d bytes without a line break", maxSkip)
)

// lineReader reads stdin a line at a time in its own goroutine, so that a
// question stops waiting when the context ends: Ctrl+C is a signal, not a
// key, and main turns it into a cancelled context. A read from a terminal
// cannot be taken back, so the last one may wait on until the process exits.
type lineReader struct {
	ctx   context.Context
	lines <-chan line
}

// line is a line of stdin without its line ending, or errLongLine for one
// over maxAnswer bytes, or errNoLineEnd.
type line struct {
	text string
	err  error
}

func newLineReader(ctx context.Context, r io.Reader) *lineReader {
	lines := make(chan line)
	go func() {
		defer close(lines)
		br := bufio.NewReaderSize(r, maxAnswer+len("\r\n"))
		for {
			l, end := readLine(br)
			if end == nil || l.text != "" || l.err != nil {
				select {
				case lines <- l:
				case <-ctx.Done():
					return
				}
			}
			if end != nil {
				return
			}
		}
	}()
	return &lineReader{ctx: ctx, lines: lines}
}

// readLine reads up to a line break. end is nil after one; otherwise it is
// why stdin ended (l holds what came before it), or errNoLineEnd.
func readLine(br *bufio.Reader) (l line, end error) {
	b, end := br.ReadSlice('\n')
	if end != bufio.ErrBufferFull {
		l.text = strings.TrimRight(string(b), "\r\n")
		if len(l.text) > maxAnswer {
			l = line{err: errLongLine}
		}
		return l, end
	}
	for skipped := len(b); end == bufio.ErrBufferFull; skipped += len(b) {
		if skipped > maxSkip {
			return line{err: errNoLineEnd}, errNoLineEnd
		}
		b, end = br.ReadSlice('\n')
	}
	return line{err: errLongLine}, end
}

// next is the next line without its line ending, or errLongLine; io.EOF
// once stdin ended, the context's error once it is done.
func (l *lineReader) next() (string, error) {
	select {
	case line, ok := <-l.lines:
		if !ok {
			return "", io.EOF
		}
		return line.text, line.err
	case <-l.ctx.Done():
		return "", l.ctx.Err()
	}
}
