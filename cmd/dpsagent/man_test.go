package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func TestManPageCoversTheCommandTree(t *testing.T) {
	code, page, stderr := runCLI(t, "__man")
	if code != exitOK {
		t.Fatalf("dpsagent __man: exit %d: %s", code, stderr)
	}
	if !strings.HasPrefix(page, ".TH DPSAGENT 1 ") {
		t.Errorf("the page does not start with its .TH header:\n%.200s", page)
	}
	root := (&cli{stdout: io.Discard, stderr: io.Discard}).rootCommand()
	for _, cmd := range visibleCommands(root) {
		if !strings.Contains(page, `.SS "`+roffEscape(cmd.CommandPath())) {
			t.Errorf("no section for %q", cmd.CommandPath())
		}
		cmd.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if !f.Hidden && !strings.Contains(page, `\fB\-\-`+roffEscape(f.Name)+`\fR`) {
				t.Errorf("%s --%s is not described", cmd.CommandPath(), f.Name)
			}
		})
	}
	if strings.Contains(page, "__man") {
		t.Error("the page shows the hidden __man command")
	}
	for key := range configDefaults {
		if !strings.Contains(page, roffEscape(envName(key))) {
			t.Errorf("environment variable for %s is not described", key)
		}
	}
	for _, code := range []int{exitOK, exitFailure, exitConfig, exitTPM, exitRefused, exitNetwork} {
		if !strings.Contains(page, ".TP\n\\fB"+strconv.Itoa(code)+"\\fR\n") {
			t.Errorf("exit status %d is not described", code)
		}
	}
	for i, line := range strings.Split(page, "\n") {
		if strings.HasPrefix(line, "'") {
			t.Errorf("line %d would be read as a request: %q", i+1, line)
		}
		if name, ok := strings.CutPrefix(line, "."); ok {
			name, _, _ = strings.Cut(name, " ")
			switch name {
			case "TH", "SH", "SS", "PP", "TP":
			default:
				t.Errorf("line %d: unexpected request %q (text not escaped?)", i+1, line)
			}
		}
	}
}

// The page must format without a warning, as lintian checks it.
func TestManPageFormatsCleanly(t *testing.T) {
	groff, err := exec.LookPath("groff")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("groff is not installed: apt-get install groff-base")
		}
		t.Skip("groff is not installed")
	}
	_, page, _ := runCLI(t, "__man")
	cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z")
	cmd.Stdin = strings.NewReader(page)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Errorf("groff: %v\n%s", err, stderr.String())
	}
}

func TestManPageIsStampedFromTheBuild(t *testing.T) {
	root := &cobra.Command{Use: "dpsagent", Short: "Do things"}
	var out bytes.Buffer
	if err := writeManPage(&out, root, "1.2.3", manDate("2026-01-02T03:04:05Z")); err != nil {
		t.Fatal(err)
	}
	want := `.TH DPSAGENT 1 2026\-01\-02 "dpsagent 1.2.3" "User Commands"` + "\n"
	if got, _, _ := strings.Cut(out.String(), "\n"); got+"\n" != want {
		t.Errorf("header %q, want %q", got, want)
	}
	if manDate("") != "" {
		t.Error("an unstamped build must leave the date empty, not invent one")
	}
}

func TestRoffEscape(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain text", "plain text"},
		{"--key-out", `\-\-key\-out`},
		{`C:\path`, `C:\epath`},
		{"café", `caf\[u00E9]`},
		{"`dpsagent run` now", `\fBdpsagent run\fR now`},
	} {
		if got := prose(tc.in); got != tc.want {
			t.Errorf("prose(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	var m roff
	m.paragraphs(".hidden request\n'another")
	if got, want := m.String(), "\\&.hidden request\n\\&'another\n"; got != want {
		t.Errorf("leading control characters: got %q, want %q", got, want)
	}
}
