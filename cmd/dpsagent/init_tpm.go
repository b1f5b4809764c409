package main

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/dpsagent/dpsagent/tpm"
	"github.com/dpsagent/dpsagent/tpm/keys"
)

// tpmProbe is what `dpsagent tpm info` finds at a TPM, kept for one line of
// the wizard and the summary. A TPM that cannot be used is reported, not
// fatal: an image is often built where the gateway's TPM is not.
type tpmProbe struct {
	spec string
	info *tpm.Info
	err  error
}

// tpmNone is the TPM setting that selects the software key.
const tpmNone = "none"

func (c *cli) probeTPM(spec string) tpmProbe {
	p := tpmProbe{spec: spec}
	if spec == tpmNone {
		return p
	}
	t, err := tpm.Open(spec, tpm.Options{Logger: c.logger()})
	if err != nil {
		p.err = err
		return p
	}
	defer t.Close()
	if p.info, err = t.Info(); err != nil {
		p.err = fmt.Errorf("read TPM %s: %w", t.Spec(), err)
	}
	return p
}

// badSpec is a TPM string that names no TPM: a wrong answer, not a TPM problem.
func (p tpmProbe) badSpec() bool { return errors.Is(p.err, tpm.ErrBadSpec) }

// mark is how the line reads at a glance.
func (p tpmProbe) mark() string {
	switch {
	case p.err != nil:
		return "✗"
	case p.info == nil:
		return "•" // none: nothing to find
	}
	return "✓"
}

// line says what was found, or what is wrong and what to do, and whether the
// configured key algorithm fits.
func (p tpmProbe) line(alg string) string {
	switch {
	case p.spec == tpmNone:
		return "none: the agent keeps its key in a file in the state directory instead of a TPM (for tests and devices without one)"
	case p.err != nil:
		return fmt.Sprintf("%v. The configuration can still be written; fix this before starting the service (`dpsagent tpm info --tpm %s` looks again)", p.err, p.spec)
	}
	in := p.info
	names := make([]string, len(in.KeyAlgorithms))
	for i, a := range in.KeyAlgorithms {
		names[i] = string(a)
	}
	maker := strings.TrimSpace(in.Manufacturer + " " + in.VendorString)
	s := fmt.Sprintf("%s at %s, firmware %s, keys %s; auto picks %s", maker, p.spec, in.FirmwareVersion, strings.Join(names, ", "), in.AutoAlgorithm)
	if a, err := keys.ParseAlgorithm(alg); err == nil && a != keys.Auto && !slices.Contains(in.KeyAlgorithms, a) {
		s += fmt.Sprintf(". ✗ It cannot make %s keys: choose auto or one it lists in the advanced settings", a)
	}
	return s
}
