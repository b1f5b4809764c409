package main

import (
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dpsagent/dpsagent/agent/store"
	"github.com/dpsagent/dpsagent/tpm"
)

// The package's dpsagent(1) is rendered from the command tree when the package
// is built, so it describes exactly the binary it ships with. cobra/doc could
// do it, but it needs a module (go-md2man) this project does not otherwise use.

func (c *cli) manCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "__man",
		Short:  "Write the dpsagent(1) man page (roff) to stdout",
		Hidden: true, // for the package build, not for operators
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return writeManPage(c.stdout, cmd.Root(), version, manDate(buildDate))
		},
	}
}

// manDate is the day of the build date (the commit's), so two builds of one
// commit render the same page; empty when the build was not stamped.
func manDate(rfc3339 string) string {
	if len(rfc3339) < len("2006-01-02") {
		return ""
	}
	return rfc3339[:len("2006-01-02")]
}

const manDescription = `dpsagent gives a Linux IoT gateway an X.509 identity whose private key is
created inside the gateway's TPM 2.0 and never leaves it. It registers with
Azure's Device Provisioning Service (DPS) with a certificate signing request,
keeps the issued certificate and the assigned IoT Hub in its state directory,
connects to that hub, and renews the certificate with a new key before it
expires.

The daemon, ` + "`dpsagent run`" + `, is started by the systemd unit dpsagent.service once
/etc/dpsagent/config.yaml exists. The other commands are for operators and
scripts.`

// manExitCodes mirrors the exit code constants in root.go.
var manExitCodes = []struct {
	code int
	what string
}{
	{exitOK, "success"},
	{exitFailure, "a failure not listed below"},
	{exitConfig, "bad configuration or usage"},
	{exitTPM, "the TPM cannot be used"},
	{exitRefused, "the service refused (enrollment, credential, CSR)"},
	{exitNetwork, "a network problem or a timeout"},
}

// writeManPage renders root and its visible subcommands as one man page.
func writeManPage(w io.Writer, root *cobra.Command, version, date string) error {
	var m roff
	name := root.Name()
	m.macro("TH", strings.ToUpper(name), "1", date, name+" "+version, "User Commands")
	m.macro("SH", "NAME")
	m.line(roffEscape(name) + ` \- ` + roffEscape(lowerFirst(root.Short)))
	m.macro("SH", "SYNOPSIS")
	m.line(`\fB` + roffEscape(name) + `\fR \fIcommand\fR [\fIoptions\fR]`)
	m.macro("SH", "DESCRIPTION")
	m.paragraphs(manDescription)

	m.macro("SH", "COMMANDS")
	for _, cmd := range visibleCommands(root) {
		m.command(cmd)
	}

	m.macro("SH", "OPTIONS")
	m.paragraphs("These options apply to every command.")
	m.flags(root.PersistentFlags())
	m.flagItem("h", "help", "", "show help for the command and exit", "")

	m.macro("SH", "FILES")
	writer := "the operator"
	if init, _, err := root.Find([]string{"init"}); err == nil && init != root {
		writer = "`dpsagent init` or the operator"
	}
	m.item(`\fI`+roffEscape(DefaultConfigFile)+`\fR`, "The configuration, written by "+writer+". Every key, its default and its meaning are in /usr/share/doc/dpsagent/examples/config.yaml. Unknown keys are errors.")
	m.item(`\fI`+roffEscape(store.DefaultDir)+`\fR`, "The state directory (mode 0700, owned by the dpsagent user): the TPM key blobs, the issued certificate chains and the manifest naming the current identity. The key blobs are usable only inside this device's TPM.")
	m.item(`\fI`+roffEscape(tpm.DefaultDevice)+`\fR`, "The TPM, through the kernel's resource manager; the service user reaches it as a member of the tss group.")

	m.macro("SH", "ENVIRONMENT")
	m.paragraphs("Every configuration key can be overridden by an environment variable: DPSAGENT_ and the key's path in capitals, joined by underscores.")
	for _, key := range sortedKeys(configDefaults) {
		m.item(`\fB`+roffEscape(envName(key))+`\fR`, "overrides `"+key+"`")
	}

	m.macro("SH", "EXIT STATUS")
	for _, e := range manExitCodes {
		m.item(fmt.Sprintf(`\fB%d\fR`, e.code), e.what)
	}

	m.macro("SH", "SEE ALSO")
	m.line(`\fBsystemctl\fR(1), \fBjournalctl\fR(1), \fBsystemd.service\fR(5)`)
	_, err := io.WriteString(w, m.String())
	return err
}

// visibleCommands lists root's subcommands depth first, as an operator sees
// them in --help: no hidden, deprecated or help commands.
func visibleCommands(root *cobra.Command) []*cobra.Command {
	var out []*cobra.Command
	for _, c := range root.Commands() {
		if !c.IsAvailableCommand() {
			continue
		}
		out = append(out, c)
		out = append(out, visibleCommands(c)...)
	}
	return out
}

// isCompletion reports whether cmd is cobra's completion command or one of its
// subcommands.
func isCompletion(cmd *cobra.Command) bool {
	for c := cmd; c.HasParent(); c = c.Parent() {
		if c.Name() == "completion" && !c.Parent().HasParent() {
			return true
		}
	}
	return false
}

func envName(key string) string {
	return "DPSAGENT_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}

// roff builds man(7) source.
type roff struct{ strings.Builder }

// macro writes a request; arguments with spaces are quoted.
func (m *roff) macro(name string, args ...string) {
	m.WriteString("." + name)
	for _, a := range args {
		a = roffEscape(a)
		if a == "" || strings.ContainsAny(a, " \t") {
			a = `"` + a + `"`
		}
		m.WriteString(" " + a)
	}
	m.WriteString("\n")
}

// line writes text that is already escaped, guarding a leading control
// character so text is never read as a request.
func (m *roff) line(s string) {
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	m.WriteString(s + "\n")
}

// paragraphs writes plain text; blank lines separate paragraphs, `code`
// becomes bold.
func (m *roff) paragraphs(text string) {
	for i, p := range strings.Split(strings.TrimSpace(text), "\n\n") {
		if i > 0 {
			m.macro("PP")
		}
		for _, l := range strings.Split(p, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				m.line(prose(l))
			}
		}
	}
}

// item is a tagged paragraph: tag is roff already, text is plain.
func (m *roff) item(tag, text string) {
	m.macro("TP")
	m.line(tag)
	m.line(prose(text))
}

func (m *roff) command(cmd *cobra.Command) {
	use := cmd.CommandPath()
	if cmd.HasAvailableSubCommands() && !cmd.Runnable() {
		use += " command"
	} else if cmd.HasAvailableLocalFlags() {
		use += " [options]"
	}
	m.macro("SS", use)
	text := cmd.Long
	if text == "" || isCompletion(cmd) {
		// cobra's completion help is about installing the scripts by
		// hand (and on macOS); the package installs them.
		text = cmd.Short + "."
	}
	m.paragraphs(text)
	m.flags(cmd.LocalFlags())
}

// flags lists a flag set, leaving out --help (listed once, under OPTIONS).
func (m *roff) flags(fs *pflag.FlagSet) {
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden || f.Name == "help" {
			return
		}
		varName, usage := pflag.UnquoteUsage(f)
		def := f.DefValue
		if f.Value.Type() == "bool" && def == "false" {
			def = ""
		}
		m.flagItem(f.Shorthand, f.Name, varName, usage, def)
	})
}

func (m *roff) flagItem(short, long, varName, usage, def string) {
	tag := `\fB\-\-` + roffEscape(long) + `\fR`
	if short != "" {
		tag = `\fB\-` + roffEscape(short) + `\fR, ` + tag
	}
	if varName != "" {
		tag += ` \fI` + roffEscape(varName) + `\fR`
	}
	text := usage
	if def != "" {
		text += " (default: " + def + ")"
	}
	m.item(tag, text)
}

var codeSpan = regexp.MustCompile("`([^`]+)`")

// prose escapes plain text and shows `code` in bold.
func prose(s string) string {
	return codeSpan.ReplaceAllString(roffEscape(s), `\fB$1\fR`)
}

// roffEscape makes plain text safe inside roff: backslashes, hyphens (so
// options stay copyable as ASCII) and anything beyond ASCII.
func roffEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\e`)
		case r == '-':
			b.WriteString(`\-`)
		case r > 0x7e:
			fmt.Fprintf(&b, `\[u%04X]`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
