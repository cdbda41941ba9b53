package main

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/harness/report"
)

// handler is the dashboard's HTTP interface:
//
//	GET  /           the page (forms work without JavaScript)
//	GET  /live       the live part of the page, which the page polls
//	GET  /script     the session as .scn lines (HTML); /script.scn as text
//	POST /act        a portal button: action=NAME vm=… [point=] [network=]
//	POST /command    any script command: line=…
//	POST /time       op=pause|run|step [by=DURATION] | op=speed speed=N
//
// A POST answers 303 to / (or, with the header X-Requested-With, 204 and
// the command's output in X-V2A-Output); a bad request 400 with why.
func (d *dashboard) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", d.page("page"))
	mux.HandleFunc("GET /live", d.page("live"))
	mux.HandleFunc("GET /script", d.page("script"))
	mux.HandleFunc("GET /script.scn", func(w http.ResponseWriter, r *http.Request) {
		var lines []string
		if !d.do(func() { lines = d.script() }) {
			http.Error(w, "serve: stopped", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprint(w, scriptText(lines))
	})
	mux.HandleFunc("POST /act", func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, "serve: "+err.Error(), http.StatusBadRequest)
			return
		}
		line, err := actionLine(r.PostForm.Get("action"), r.PostForm["vm"], r.PostForm.Get("point"), r.PostForm.Get("network"))
		if err != nil {
			http.Error(w, "serve: "+err.Error(), http.StatusBadRequest)
			return
		}
		d.answer(w, r, func() string { return d.command(line) })
	})
	mux.HandleFunc("POST /command", func(w http.ResponseWriter, r *http.Request) {
		line := strings.TrimSpace(r.PostFormValue("line"))
		if line == "" || strings.ContainsAny(line, "\n\r") {
			http.Error(w, "serve: want one script line, as line=status", http.StatusBadRequest)
			return
		}
		if strings.HasPrefix(line, "world") {
			http.Error(w, "serve: the world is built already", http.StatusBadRequest)
			return
		}
		d.answer(w, r, func() string { return d.command(line) })
	})
	mux.HandleFunc("POST /time", func(w http.ResponseWriter, r *http.Request) {
		f, err := d.timeOp(r.PostFormValue("op"), r.PostFormValue("by"), r.PostFormValue("speed"))
		if err != nil {
			http.Error(w, "serve: "+err.Error(), http.StatusBadRequest)
			return
		}
		d.answer(w, r, f)
	})
	return mux
}

// timeOp checks a /time request and returns what the loop does for it.
func (d *dashboard) timeOp(op, by, speed string) (func() string, error) {
	switch op {
	case "pause":
		return func() string { d.paused = true; return "" }, nil
	case "run":
		return func() string { d.paused = false; return "" }, nil
	case "step":
		dur, err := time.ParseDuration(by)
		if err != nil || dur <= 0 || dur > 24*time.Hour {
			return nil, fmt.Errorf("step: by=%q: want a duration in (0, 24h], as by=1m", by)
		}
		return func() string { d.advance(dur); return "" }, nil
	case "speed":
		s, err := strconv.ParseFloat(speed, 64)
		if err != nil || s <= 0 || s > maxSpeed {
			return nil, fmt.Errorf("speed=%q: want simulated seconds a real second in (0, %d]", speed, maxSpeed)
		}
		return func() string { d.speed = s; return "" }, nil
	}
	return nil, fmt.Errorf("op=%q: want pause, run, step or speed", op)
}

// answer runs f in the loop and answers a POST.
func (d *dashboard) answer(w http.ResponseWriter, r *http.Request, f func() string) {
	var out string
	if !d.do(func() { out = f() }) {
		http.Error(w, "serve: stopped", http.StatusServiceUnavailable)
		return
	}
	if r.Header.Get("X-Requested-With") != "" {
		w.Header().Set("X-V2A-Output", strconv.Quote(out))
		w.WriteHeader(http.StatusNoContent)
		return
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// page renders one of the templates over a snapshot of the world.
func (d *dashboard) page(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var v view
		if !d.do(func() { v = d.snapshot() }) {
			http.Error(w, "serve: stopped", http.StatusServiceUnavailable)
			return
		}
		var b bytes.Buffer
		if err := pageTmpl.ExecuteTemplate(&b, name, v); err != nil {
			http.Error(w, "serve: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = b.WriteTo(w)
	}
}

var pageTmpl = template.Must(template.New("").Parse(`
{{define "head"}}<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>v2a dashboard</title>
<style>
body{font:14px system-ui,sans-serif;margin:0;background:#f4f6f8;color:#1b1f23}
header{background:#0b3d62;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:center;flex-wrap:wrap}
header a{color:#cfe6ff}
main{padding:12px 16px;display:grid;grid-template-columns:minmax(0,3fr) minmax(0,2fr);gap:12px}
section{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:8px 12px}
h2{font-size:15px;margin:4px 0 8px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #eaeef2;font-variant-numeric:tabular-nums}
td.n{text-align:right}
pre{margin:0;font:12px ui-monospace,monospace;white-space:pre-wrap}
.state-protected,.state-succeeded{color:#116329}.state-failed{color:#b00}
.running{color:#9a6700}
form{display:inline}
.wide{grid-column:1/-1}
.group-rounds svg{display:block;font:11px system-ui,sans-serif;max-width:100%;height:auto}
.group-rounds h3{font-size:13px;font-weight:normal;color:#57606a}
` + report.PhaseCSS + `</style></head><body>{{end}}

{{define "page"}}{{template "head" .}}
<header><strong>v2a</strong> live dashboard
<form method="post" action="/time"><button name="op" value="pause">pause</button><button name="op" value="run">run</button></form>
<form method="post" action="/time"><input type="hidden" name="op" value="step"><input type="hidden" name="by" value="1m"><button id="step-1m">+1 min</button></form>
<form method="post" action="/time"><input type="hidden" name="op" value="step"><input type="hidden" name="by" value="10m"><button id="step-10m">+10 min</button></form>
<form method="post" action="/time"><input type="hidden" name="op" value="speed"><input name="speed" size="5" value="{{.Speed}}"> sim s/s <button>set speed</button></form>
<a href="/script">script</a>
</header>
<main>
<section class="wide" id="actions"><h2>portal actions</h2>
<form method="post" action="/act" id="act">
{{range .Names}}<label><input type="checkbox" name="vm" value="{{.}}"> {{.}}</label> {{end}}
&nbsp; point <select name="point">{{range .Points}}<option{{if eq . "latest"}} selected{{end}}>{{.}}</option>{{end}}</select>
network <input name="network" value="drill" size="8">
<br>{{range .Actions}}<button name="action" value="{{.Name}}" id="act-{{.Name}}">{{.Label}}</button> {{end}}
</form>
<form method="post" action="/command"> &nbsp; command <input name="line" size="40" placeholder="vpn state=up"> <button>run</button></form>
</section>
<div id="live" class="wide">{{template "live" .}}</div>
</main>
<script>
setInterval(async () => {
  try { const r = await fetch('/live'); if (r.ok) document.getElementById('live').innerHTML = await r.text(); } catch (e) {}
}, 1000);
</script>
</body></html>{{end}}

{{define "live"}}<main style="padding:0">
<section class="wide" id="clock">virtual time <strong id="elapsed">{{.Elapsed}}</strong>
{{if .Paused}}<span id="clock-state">paused</span>{{else}}<span id="clock-state" class="running">running</span> at {{.Speed}} sim s/s{{end}}
· <span id="tally">{{.Tally}}</span> · trace <code id="trace">{{.Trace}}</code></section>
<section class="wide"><h2>replicated items</h2>
{{if .MachinesErr}}<p>{{.MachinesErr}}</p>{{end}}
<table id="machines"><thead><tr><th>machine</th><th>state</th><th>mode</th><th>written</th><th>sent</th><th>ratio</th><th>codec</th><th>crash</th><th>app</th><th>rpo</th></tr></thead><tbody>
{{range .Machines}}<tr><td>{{.Machine}}</td><td class="state-{{.State}}">{{.State}}</td><td>{{.Mode}}</td><td class="n">{{.WrittenMiB}}</td><td class="n">{{.SentMiB}}</td><td class="n">{{.Ratio}}</td><td>{{.Codec}}</td><td class="n">{{.Crash}}</td><td class="n">{{.App}}</td><td class="n">{{.RPO}}</td></tr>
{{end}}</tbody></table></section>
<section class="wide" id="failover-jobs"><h2>failover jobs</h2>
{{if not .Jobs}}<p>no failover jobs yet</p>{{end}}
{{range .Jobs}}<div class="job" id="job-{{.ID}}"><p><strong>{{.ID}}</strong> {{.Op}} {{.What}}: <span class="state-{{.State}}">{{.State}}</span> at {{.Requested}}, RTO {{.RTO}}</p>
<table class="tasks"><tbody>{{range .Tasks}}<tr><td class="state-{{.State}}">{{.State}}</td><td>{{.Name}}</td><td>{{.Where}}</td><td class="n">{{.Took}}</td><td>{{.Detail}}</td></tr>{{end}}</tbody></table></div>
{{end}}</section>
{{range .Panels}}<section id="{{.ID}}"><h2>{{.Title}}</h2><pre>{{.Text}}</pre></section>
{{end}}
<section class="wide" id="group-rounds"><h2>multi-VM rounds</h2>
{{if .GroupsErr}}<p>{{.GroupsErr}}</p>{{else if not .Groups}}<p>no replication groups</p>{{end}}
{{range .Groups}}<div class="group-rounds" data-group="{{.Name}}"><h3>group {{.Name}}: the last {{.Rounds}} rounds, each from its start: phases as the master saw them, members' write holds under each</h3>
{{if .Rounds}}{{.SVG}}{{else}}<p>no round reported yet</p>{{end}}</div>
{{end}}</section>
<section class="wide" id="log"><h2>commands</h2>
{{range .Log}}<pre><strong>&gt; {{.Line}}</strong>
{{.Out}}</pre>{{end}}</section>
</main>{{end}}

{{define "script"}}{{template "head" .}}
<header><strong>v2a</strong> session script · <a href="/">dashboard</a> · <a href="/script.scn">download .scn</a></header>
<main><section class="wide"><p>Save this as a .scn file and <code>v2a run FILE</code> replays the session: the same commands at the same virtual times, the same trace.</p>
<p>trace-sha256 now: <code id="trace">{{.Trace}}</code></p>
<pre id="script">{{range .Lines}}{{.}}
{{end}}</pre></section></main></body></html>{{end}}
`))
