package tpm

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
)

// FuzzParseSpec feeds parseSpec, the parser behind Open, what advanced.tpm,
// DPSAGENT_ADVANCED_TPM or --tpm could hold. It must never panic; a spec it
// refuses gets an ErrBadSpec error that quotes it and names the forms; a spec
// it accepts is one the dialer or the device opener can use as it stands
// (so a typo is reported as a configuration mistake, never as a TPM that is
// down), and it names itself again.
//
//	go test -run '^$' -fuzz FuzzParseSpec -fuzztime 60s ./tpm/
func FuzzParseSpec(f *testing.F) {
	for _, s := range []string{
		"", DefaultDevice, "/dev/tpm0", "/dev/does-not-exist-tpm",
		"tcp:127.0.0.1:2321", "tcp:127.0.0.1:1", "tcp:localhost:2321", "tcp:[::1]:2321",
		"unix:/run/swtpm/sock", "unix:nope.sock",
		"swtpm", "none", "tpm:0x81000003", "TCP:127.0.0.1:2321", " /dev/tpmrm0",
		"tcp:", "tcp:127.0.0.1", "tcp:127.0.0.1:", "tcp:127.0.0.1:0", "tcp:127.0.0.1:65536",
		"tcp:127.0.0.1:http", "tcp:127.0.0.1:+2321", "tcp:::1:2321", "unix:", "/dev/tpmrm0\n", "/dev/tpm\x000",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		tg, err := parseSpec(spec)
		named := spec
		if named == "" {
			named = DefaultDevice
		}
		if err != nil {
			if tg != (target{}) {
				t.Fatalf("parseSpec(%q) returned %+v together with %v", spec, tg, err)
			}
			if !errors.Is(err, ErrBadSpec) {
				t.Fatalf("parseSpec(%q): %v does not wrap ErrBadSpec", spec, err)
			}
			msg := err.Error()
			if !strings.Contains(msg, strconv.Quote(named)) {
				t.Fatalf("parseSpec(%q): the error does not quote the spec: %v", spec, err)
			}
			if !strings.Contains(msg, "tcp:") && !strings.Contains(msg, "unix:") && !strings.Contains(msg, "remove it") {
				t.Fatalf("parseSpec(%q): the error does not say what to write instead: %v", spec, err)
			}
			return
		}
		if got := tg.String(); got != named {
			t.Fatalf("parseSpec(%q) = %+v, which names %q", spec, tg, got)
		}
		if again, err := parseSpec(tg.String()); err != nil || again != tg {
			t.Fatalf("parseSpec(%q) = %+v, but its String %q parses as %+v, %v", spec, tg, tg.String(), again, err)
		}
		if strings.ContainsFunc(tg.addr, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Fatalf("parseSpec(%q) accepted an address with a control character: %q", spec, tg.addr)
		}
		if strings.TrimSpace(named) != named {
			t.Fatalf("parseSpec(%q) accepted a spec with white space around it", spec)
		}
		switch tg.network {
		case "tcp":
			_, port, err := net.SplitHostPort(tg.addr)
			if err != nil {
				t.Fatalf("parseSpec(%q) accepted tcp address %q, which the dialer refuses: %v", spec, tg.addr, err)
			}
			if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
				t.Fatalf("parseSpec(%q) accepted tcp port %q", spec, port)
			}
		case "unix":
			if tg.addr == "" {
				t.Fatalf("parseSpec(%q) accepted a unix socket without a path", spec)
			}
		case "device":
			if !strings.HasPrefix(tg.addr, "/") {
				t.Fatalf("parseSpec(%q) accepted device %q, not an absolute path", spec, tg.addr)
			}
		default:
			t.Fatalf("parseSpec(%q) = %+v: unknown network", spec, tg)
		}
	})
}
