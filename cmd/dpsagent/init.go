package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"
)

// initFlags are the wizard's questions as flags, for image builds and scripts,
// plus how init runs.
type initFlags struct {
	answers        map[string]*string // flag name → value, for the string answers
	groupKey       bool
	path           string
	yes            bool
	force          bool
	nonInteractive bool
	accessible     bool
}

func (c *cli) initCommand() *cobra.Command {
	f := &initFlags{answers: map[string]*string{}}
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Write the configuration: a step-by-step wizard, or flags for image builds",
		Long: `Write ` + DefaultConfigFile + ` (mode 0640). In a terminal a wizard asks for the
ID scope, the registration ID, the onboarding method and where its secret lives,
shows what it finds in the TPM and a summary before writing. The advanced
settings are asked only if you want to change them.

Without a terminal (or with --non-interactive) nothing is asked: every answer
comes from the flags, with the defaults for the rest, and a bad value stops init
with exit code 2 and a valid example. An existing configuration is never
replaced without asking (or --force).`,
		Example: `  dpsagent init
  dpsagent init --non-interactive --id-scope 0ne00000001 --registration-id gateway-001 \
      --symmetric-key-file /etc/dpsagent/onboarding.key
  dpsagent init --non-interactive --id-scope 0ne00000001 --registration-id gateway-001 \
      --onboarding x509 --x509-certificate-file /etc/dpsagent/birth.pem --x509-key tpm-blob:/etc/dpsagent/birth.tpm`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.runInit(cmd, f)
		},
	}
	// Only the flags given count, so that the wizard can start from an
	// existing file; the defaults are there for --help to show.
	def, _ := defaultConfig()
	for _, q := range initQuestions {
		v := new(string)
		f.answers[q.flag] = v
		cmd.Flags().StringVar(v, q.flag, q.get(&def), q.usage)
	}
	cmd.Flags().BoolVar(&f.groupKey, "group-key", false, "the symmetric key file holds an enrollment group's key; this device's key is derived from it")
	c.configFlag(cmd, &f.path)
	cmd.Flags().BoolVarP(&f.yes, "yes", "y", false, "write without asking for a final confirmation (an existing configuration still needs --force)")
	cmd.Flags().BoolVar(&f.force, "force", false, "replace an existing configuration")
	cmd.Flags().BoolVar(&f.nonInteractive, "non-interactive", false, "ask nothing: take every answer from the flags (implied when stdin is not a terminal)")
	cmd.Flags().BoolVar(&f.accessible, "accessible", false, "ask the wizard's questions even when stdin is not a terminal, one line each: for scripted answers on stdin")
	return cmd
}

// asks says whether init asks its questions (the wizard) or takes every
// answer from the flags.
func (f *initFlags) asks(in io.Reader) (bool, error) {
	switch {
	case f.nonInteractive && f.accessible:
		return false, withCode(exitConfig, errors.New("--accessible asks questions and --non-interactive asks none: give one of them"))
	case f.nonInteractive:
		return false, nil
	case f.accessible:
		return true, nil
	}
	return isTerminal(in), nil
}

func (c *cli) runInit(cmd *cobra.Command, f *initFlags) error {
	asks, err := f.asks(cmd.InOrStdin())
	if err != nil {
		return err
	}
	cfg, err := defaultConfig()
	if err != nil {
		return withCode(exitFailure, err)
	}
	exists, err := configExists(f.path)
	if err != nil {
		return withCode(exitFailure, err)
	}
	if asks {
		err = c.initByWizard(cmd, f, &cfg, exists)
	} else {
		err = c.initFromFlags(cmd, f, &cfg, exists)
	}
	if err != nil {
		return err
	}
	// The wizard judged what it asked; this judges what it did not (answers
	// given as flags, or kept from the old file), and the whole.
	if err := checkFlagAnswers(&cfg); err != nil {
		return withCode(exitConfig, err)
	}
	if err := cfg.validate(); err != nil {
		return withCode(exitConfig, fmt.Errorf("the answers do not make a valid configuration: %w", err))
	}
	return c.writeInitConfig(&cfg, f.path, exists)
}

// initFromFlags takes every answer from the flags and the defaults.
func (c *cli) initFromFlags(cmd *cobra.Command, f *initFlags, cfg *Config, exists bool) error {
	if exists && !f.force {
		return withCode(exitConfig, fmt.Errorf("%s already exists: nothing written; add --force to replace it, or --config PATH to write elsewhere", f.path))
	}
	if err := f.apply(cmd.Flags().Changed, cfg); err != nil {
		return withCode(exitConfig, err)
	}
	if err := f.requireFlags(cmd.Flags().Changed); err != nil {
		return withCode(exitConfig, err)
	}
	if err := checkFlagAnswers(cfg); err != nil {
		return withCode(exitConfig, err)
	}
	probe := c.probeTPM(cfg.Advanced.TPM)
	if probe.badSpec() {
		return withCode(exitConfig, flagError("tpm", cfg.Advanced.TPM, probe.err))
	}
	absolutePaths(cfg)
	c.printSummary(cfg, probe, f.path)
	return nil
}

// initByWizard asks, starting from the existing configuration when there is
// one (so a technician can change one answer) and the flags given.
func (c *cli) initByWizard(cmd *cobra.Command, f *initFlags, cfg *Config, exists bool) error {
	w := c.newWizard(cmd)
	defer w.close()
	if exists {
		old, err := loadConfig(f.path, nil)
		if err != nil {
			w.note("The existing configuration does not load, so the wizard starts from the defaults:\n  %v", err)
		} else {
			*cfg = *old
		}
	}
	if err := f.apply(cmd.Flags().Changed, cfg); err != nil {
		return withCode(exitConfig, err)
	}
	if exists && !f.force {
		ok, err := w.confirmReplace(f.path)
		if err != nil {
			return err
		}
		if !ok {
			return withCode(exitFailure, fmt.Errorf("nothing written: %s is left as it was", f.path))
		}
	}
	return w.run(cfg, f.path, f.yes)
}

// defaultConfig is the configuration with every key at its default, the
// same defaults the service applies to keys a file leaves out.
func defaultConfig() (Config, error) {
	v := viper.New()
	for k, d := range configDefaults {
		v.SetDefault(k, d)
	}
	var cfg Config
	if err := v.UnmarshalExact(&cfg); err != nil {
		return Config{}, fmt.Errorf("default configuration: %w", err)
	}
	return cfg, nil
}

func configExists(path string) (bool, error) {
	_, err := os.Lstat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, fmt.Errorf("look for an existing configuration: %w", err)
}
