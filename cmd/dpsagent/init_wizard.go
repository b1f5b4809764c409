package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/dpsagent/dpsagent/tpm"
	"github.com/dpsagent/dpsagent/tpm/keys"
)

const wizardSteps = 6

func stepTitle(n int, what string) string {
	return fmt.Sprintf("Step %d of %d · %s", n, wizardSteps, what)
}

func methodName(method string) string {
	if method == OnboardX509 {
		return "X.509 birth certificate"
	}
	return "symmetric key"
}

func (w *wizard) confirmReplace(path string) (bool, error) {
	replace := false
	err := w.ask("A configuration already exists",
		path+" is already there. The wizard starts from its answers, and nothing\n"+
			"changes before you accept the summary at the end.",
		w.confirm("Replace it?", &replace))
	return replace, err
}

// run asks every step, then shows the summary until the answers are accepted.
func (w *wizard) run(cfg *Config, path string, yes bool) error {
	w.note("dpsagent init writes %s in %d steps. Have ready the ID scope of your\n"+
		"DPS instance (Azure portal, the instance's Overview page) and this device's onboarding\n"+
		"credential: its enrollment's symmetric key in a file, or its birth certificate and key.\n"+
		"Nothing is written before you accept the summary.", path, wizardSteps)
	w.note("Ctrl+C stops without writing; Enter alone keeps the answer shown in brackets.")
	if cfg.RegistrationID == "" {
		if host, err := os.Hostname(); err == nil && checkRegistrationID(host) == nil {
			cfg.RegistrationID = host
		}
	}
	for {
		for _, step := range []func(*Config) error{w.askIDScope, w.askRegistrationID, w.askOnboardingMethod, w.askSecret, w.askTPM} {
			if err := step(cfg); err != nil {
				return err
			}
		}
		absolutePaths(cfg)
		summary := renderSummary(cfg, w.probe, path)
		if yes {
			w.note("\n%s\n%s", stepTitle(6, "Summary"), summary)
			return nil
		}
		again, err := w.askAccept(summary)
		if err != nil || !again {
			return err
		}
	}
}

// answered repeats an answer once it is taken: Enter alone keeps a value
// without showing it again.
func (w *wizard) answered(err error, label, value string) {
	if err == nil {
		w.note("✓ %s: %s", label, value)
	}
}

func (w *wizard) askIDScope(cfg *Config) error {
	err := w.ask(stepTitle(1, "ID scope"),
		"The ID scope names your Device Provisioning Service instance: 0ne and 8 hexadecimal\n"+
			"digits, on the instance's Overview page in the Azure portal.",
		w.input("ID scope", &cfg.IDScope, checkIDScope))
	cfg.IDScope = strings.TrimSpace(cfg.IDScope)
	w.answered(err, "ID scope", cfg.IDScope)
	return err
}

func (w *wizard) askRegistrationID(cfg *Config) error {
	err := w.ask(stepTitle(2, "Registration ID"),
		"The name this device is enrolled under in DPS: letters, digits and - . _ : (at most 128).\n"+
			"This machine's host name is offered. With a birth certificate it is the certificate's\n"+
			"common name.",
		w.input("Registration ID", &cfg.RegistrationID, checkRegistrationID))
	cfg.RegistrationID = strings.TrimSpace(cfg.RegistrationID)
	w.answered(err, "Registration ID", cfg.RegistrationID)
	return err
}

func (w *wizard) askOnboardingMethod(cfg *Config) error {
	err := w.ask(stepTitle(3, "Onboarding"),
		"How DPS recognises this device the first time it asks:\n"+
			"  Symmetric key: the device proves itself with its enrollment's secret key, kept in a file.\n"+
			"  X.509 birth certificate: the device proves itself with a certificate from its maker,\n"+
			"  its key in the TPM or in a file.\n"+
			"Enter alone keeps the "+methodName(cfg.Onboarding.Method)+".",
		w.choose("Onboarding method", &cfg.Onboarding.Method,
			choice{"Symmetric key", OnboardSymmetricKey},
			choice{"X.509 birth certificate", OnboardX509}))
	w.answered(err, "Onboarding", methodName(cfg.Onboarding.Method))
	return err
}

func (w *wizard) askSecret(cfg *Config) error {
	if cfg.Onboarding.Method == OnboardX509 {
		return w.askBirthCertificate(cfg)
	}
	o := &cfg.Onboarding
	err := w.ask(stepTitle(4, "Symmetric key"),
		"The file holds the enrollment's primary key as the Azure portal shows it (base64). Others\n"+
			"must not be able to read it: chmod 600 FILE (or 640 with group dpsagent). A group key is\n"+
			"shared by the devices of an enrollment group; the agent derives this device's key from it.",
		w.input("Key file", &o.SymmetricKeyFile, checkSymmetricKeyFile),
		w.confirm("Is it an enrollment group's key?", &o.GroupKey))
	o.SymmetricKeyFile = strings.TrimSpace(o.SymmetricKeyFile)
	kind := "an individual enrollment's key"
	if o.GroupKey {
		kind = "an enrollment group's key"
	}
	w.answered(err, "Key file", o.SymmetricKeyFile+" ("+kind+")")
	return err
}

func (w *wizard) askBirthCertificate(cfg *Config) error {
	x := &cfg.Onboarding.X509
	err := w.ask(stepTitle(4, "Birth certificate"),
		"The birth certificate chain (PEM, the device certificate first) and where its key is:\n"+
			"tpm-blob:PATH for a key made in this TPM by `dpsagent birth-key`, or file:PATH for a key\n"+
			"file that only its owner can read (chmod 600).",
		w.input("Certificate file", &x.CertificateFile, func(p string) error {
			_, err := readBirthCertificate(p)
			return err
		}),
		w.input("Key", &x.Key, func(k string) error { return checkX509Key(cfg, k) }))
	x.CertificateFile, x.Key = strings.TrimSpace(x.CertificateFile), strings.TrimSpace(x.Key)
	w.answered(err, "Birth certificate", x.CertificateFile+", key "+x.Key)
	if err != nil {
		return err
	}
	// DPS takes the certificate's common name as the registration ID: an
	// answer that differs would only fail later, at DPS.
	cert, err := readBirthCertificate(x.CertificateFile)
	if err != nil { // changed since it was accepted
		return withCode(exitConfig, err)
	}
	if cn := cert.Subject.CommonName; cn != cfg.RegistrationID && checkRegistrationID(cn) == nil {
		w.note("The certificate is for %q, and DPS takes its common name as the registration ID:\n"+
			"the registration ID is now %s (it was %s).", cn, cn, cfg.RegistrationID)
		cfg.RegistrationID = cn
	}
	return nil
}

func (w *wizard) askTPM(cfg *Config) error {
	w.lookAtTPM(cfg)
	if err := w.fixTPM(cfg); err != nil {
		return err
	}
	advanced := false
	err := w.ask(stepTitle(5, "TPM"),
		"The agent makes its own key inside the TPM, so the key never leaves the chip.\n"+
			"What `dpsagent tpm info` finds:\n  "+w.probe.mark()+" "+w.probe.line(cfg.Advanced.KeyAlgorithm)+"\n"+
			"The advanced settings are the DPS endpoint, the key algorithm, when to renew, extra\n"+
			"trusted CAs, the hub port and which TPM to use. The defaults suit Azure and a gateway\n"+
			"with a TPM.",
		w.confirm("Change advanced settings?", &advanced))
	if err != nil || !advanced {
		return err
	}
	return w.askAdvanced(cfg)
}

func (w *wizard) recordTPM(err error, cfg *Config) {
	if err == nil {
		w.note("%s TPM: %s", w.probe.mark(), w.probe.line(cfg.Advanced.KeyAlgorithm))
	}
}

func (w *wizard) lookAtTPM(cfg *Config) {
	if cfg.Advanced.TPM != tpmNone {
		w.note("Looking at the TPM %s…", cfg.Advanced.TPM)
	}
	w.probe = w.c.probeTPM(cfg.Advanced.TPM)
}

// fixTPM asks again while the TPM setting names no TPM at all. A TPM that
// is named but cannot be used now is only reported.
func (w *wizard) fixTPM(cfg *Config) error {
	for w.probe.badSpec() {
		w.note("✗ %v", w.probe.err)
		err := w.ask("TPM", "Name the TPM: a device path ("+tpm.DefaultDevice+"), unix:PATH or tcp:HOST:PORT (an emulator),\n"+
			"or none for a key kept in a file.",
			w.input("TPM", &cfg.Advanced.TPM, checkTPMAnswer))
		if err != nil {
			return err
		}
		cfg.Advanced.TPM = strings.TrimSpace(cfg.Advanced.TPM)
		w.lookAtTPM(cfg)
	}
	return nil
}

// checkTPMAnswer leaves what a TPM string means to the probe that follows.
func checkTPMAnswer(v string) error {
	if v == "" {
		return errors.New("name the TPM, such as " + tpm.DefaultDevice + ", or none")
	}
	return nil
}

func (w *wizard) askAdvanced(cfg *Config) error {
	a := &cfg.Advanced
	port := strconv.Itoa(a.HubPort)
	before := a.TPM
	err := w.ask("Advanced settings",
		"Enter alone keeps a setting; - clears it. The key algorithm auto picks the strongest the\n"+
			"TPM offers that Azure accepts. A renewal threshold is a share of the certificate's\n"+
			"lifetime (80%) or a time before it expires (7d). The trust bundle adds CA certificates\n"+
			"to trust (an emulator, a TLS-inspecting proxy); leave it empty for Azure. The TPM is a\n"+
			"device path, unix:PATH or tcp:HOST:PORT (an emulator), or none for a key kept in a file.",
		w.input("DPS endpoint", &a.DPSEndpoint, checkDPSEndpoint),
		w.choose("Key algorithm", &a.KeyAlgorithm, w.algorithmChoices()...),
		w.input("Renewal threshold", &a.Renewal.Threshold, func(v string) error { return checkRenewalThreshold(cfg, v) }),
		w.input("Trust bundle file", &a.TrustBundleFile, checkTrustBundle),
		w.input("Hub port", &port, func(v string) error {
			n, err := strconv.Atoi(v)
			if err != nil {
				n = 0
			}
			return checkHubPort(n)
		}),
		w.input("TPM", &a.TPM, checkTPMAnswer))
	if err != nil {
		return err
	}
	for _, p := range []*string{&a.DPSEndpoint, &a.Renewal.Threshold, &a.TrustBundleFile, &a.TPM} {
		*p = strings.TrimSpace(*p)
	}
	if err := question("hub-port").set(cfg, port); err != nil {
		return err
	}
	w.answered(nil, "Advanced", fmt.Sprintf("DPS endpoint %s, key algorithm %s, renewal threshold %s, trust bundle %q, hub port %d, TPM %s",
		a.DPSEndpoint, a.KeyAlgorithm, a.Renewal.Threshold, a.TrustBundleFile, a.HubPort, a.TPM))
	if a.TPM == before {
		return nil
	}
	w.lookAtTPM(cfg)
	if err := w.fixTPM(cfg); err != nil {
		return err
	}
	w.recordTPM(nil, cfg)
	return nil
}

// algorithmOptions says, when the TPM was found, what auto picks on it and
// which algorithms it cannot make.
func (w *wizard) algorithmChoices() []choice {
	var opts []choice
	for _, a := range []keys.Algorithm{keys.Auto, keys.ECDSAP256, keys.ECDSAP384, keys.RSA2048} {
		label := string(a)
		switch in := w.probe.info; {
		case in == nil:
		case a == keys.Auto:
			label += " (" + string(in.AutoAlgorithm) + " on this TPM)"
		case !slices.Contains(in.KeyAlgorithms, a):
			label += " (this TPM cannot make it)"
		}
		opts = append(opts, choice{label, string(a)})
	}
	return opts
}

// askAccept shows the summary; it reports whether to ask the questions again.
func (w *wizard) askAccept(summary string) (again bool, err error) {
	const (
		write  = "write"
		change = "change"
		quit   = "quit"
	)
	answer := write
	err = w.ask(stepTitle(6, "Summary"), summary,
		w.choose("Write this configuration?", &answer,
			choice{"Write it", write},
			choice{"Change an answer (the questions again, starting from these answers)", change},
			choice{"Quit without writing", quit}))
	switch {
	case err != nil:
		return false, err
	case answer == quit:
		return false, withCode(exitFailure, errStopped)
	}
	return answer == change, nil
}
