package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/v2a-dr/v2a/impl/csstore"
	"github.com/v2a-dr/v2a/impl/pki"
	"github.com/v2a-dr/v2a/impl/runtime"
)

// ErrInterrupted: a second signal came during the drain; the daemon exits
// at once (exit code 130) without waiting for it.
var ErrInterrupted = errors.New("daemon: second signal during the drain; exiting at once")

// component is one daemon's actor and what runs around it.
type component struct {
	addr    runtime.Addr
	factory runtime.Factory
	// started runs once the actor listens (the agent's guest starts).
	started func()
	// stopping runs before the runtime stops (the guest's workload ends,
	// so nothing is written after the filter closes).
	stopping func() error
	// stopped runs after the runtime stopped: flush and close files.
	stopped func() error
	// certs is the configuration server's certificate register (its
	// database), which its enrollment endpoint records in.
	certs csstore.Certs
}

// Run runs daemon with configuration c until ctx is done or a signal
// arrives on sig, then drains. Logs go to stderr. It returns nil after a
// clean drain, an ErrConfig error when nothing could start, an ErrRun
// error when the drain failed, and ErrInterrupted on a second signal.
func Run(ctx context.Context, daemon string, c Config, stderr io.Writer, sig <-chan os.Signal) error {
	log, err := newLogger(daemon, c, stderr)
	if err != nil {
		return err
	}
	pass, err := readSecret(daemon, SecretPassphrase, c.PassphraseFile)
	if err != nil {
		return err
	}
	peers, err := parsePeers(daemon, c.Peers)
	if err != nil {
		return err
	}
	opts := runtime.RealOptions{Seed: c.Seed, Logger: log, StopTimeout: c.StopTimeout.D()}
	var (
		enrollSrv *enrollServer
		keeper    *pki.Keeper
		ca        *pki.CA
	)
	if c.TLSDir != "" {
		var id pki.Identity
		if id, ca, err = setUpTLS(ctx, daemon, c, pass, log); err != nil {
			return err
		}
		keeper = pki.NewKeeper(id)
		opts.ServerTLS, opts.ClientTLS, opts.Admit = keeper.ServerConfig(), keeper.ClientConfig(), keeper.Check
	}
	comp, err := build(daemon, c, pass, log)
	if err != nil {
		return err
	}
	if ca != nil {
		if enrollSrv, err = startEnrollment(ca, keeper, comp.certs, c, pass, log); err != nil {
			if comp.stopped != nil {
				comp.stopped()
			}
			return err
		}
	}
	if keeper != nil {
		wctx, cancel := context.WithCancel(ctx)
		w := newCertWatch(daemon, c, keeper, ca, log)
		done := make(chan struct{})
		go func() {
			defer close(done)
			w.run(wctx)
		}()
		defer func() {
			cancel()
			<-done
		}()
	}
	if enrollSrv != nil {
		stopped := comp.stopped
		comp.stopped = func() error {
			err := enrollSrv.close()
			if stopped != nil {
				err = errors.Join(err, stopped())
			}
			return err
		}
	}
	return serve(ctx, daemon, c, log, opts, peers, comp, sig)
}

// serve runs comp on a Real with opts until ctx is done or a signal, then
// drains it (see Run).
func serve(ctx context.Context, daemon string, c Config, log *slog.Logger, opts runtime.RealOptions, peers peerMap, comp component, sig <-chan os.Signal) error {
	var r *runtime.Real
	opts.Listen = func(a runtime.Addr) string {
		if a == comp.addr {
			return c.Listen
		}
		return string(a)
	}
	opts.Resolve = func(a runtime.Addr) (string, error) {
		if b := r.BoundAddr(a); b != "" {
			return b, nil // itself (the configuration server's own replies)
		}
		return peers.resolve(a), nil
	}
	r = runtime.NewReal(opts)
	if err := r.Spawn(comp.addr, comp.factory); err != nil {
		var cerr error
		if comp.stopping != nil {
			cerr = comp.stopping()
		}
		if comp.stopped != nil {
			cerr = errors.Join(cerr, comp.stopped())
		}
		if cerr != nil {
			log.Error("daemon: closing after a failed start", "err", cerr)
		}
		return listenError(daemon, comp.addr, c.Listen, err)
	}
	log.Info("daemon: started", "addr", string(comp.addr), "listen", r.BoundAddr(comp.addr), "tls", c.TLSDir != "", "pid", os.Getpid())
	if comp.started != nil {
		comp.started()
	}

	select {
	case <-ctx.Done():
		log.Info("daemon: draining", "cause", context.Cause(ctx).Error())
	case s := <-sig:
		log.Info("daemon: draining", "signal", s.String(), "stop-timeout", c.StopTimeout.D().String())
	}
	done := make(chan error, 1)
	go func() {
		var errs []error
		if comp.stopping != nil {
			errs = append(errs, comp.stopping())
		}
		errs = append(errs, r.Stop())
		if comp.stopped != nil {
			errs = append(errs, comp.stopped())
		}
		done <- errors.Join(errs...)
	}()
	select {
	case err := <-done:
		if err != nil {
			log.Error("daemon: drain failed", "err", err)
			return fmt.Errorf("%w: %s: drain: %w", ErrRun, daemon, err)
		}
		log.Info("daemon: drained", "addr", string(comp.addr))
		return nil
	case s := <-sig:
		log.Warn("daemon: second signal; exiting without waiting for the drain", "signal", s.String())
		return ErrInterrupted
	}
}
