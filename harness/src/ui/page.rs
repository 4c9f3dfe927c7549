//! The page: one HTML document with its script and style inline (no
//! external asset). It reads `/events` (the token from its own URL) and
//! draws from the events alone: the state (serving version, last
//! verdict, a build under way), the roofline plot of each served backend
//! (`/roofline`, drawn by the server with `kiln report`'s code from the
//! `roofline` events, fetched again after each one), each
//! call's time over the previous version's with its interval (the chart of
//! `/ratios`, drawn by the server with `kiln report`'s code, fetched again
//! after each replay, failure, crash or hang), the log; its buttons (replay,
//! undo, bless, and switch to the backend typed beside it) POST
//! `/control/NAME` (`?arg=BACKEND` for switch) and show a refusal's reason.

pub const HTML: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>kiln dev</title>
<style>
body{font:14px system-ui,sans-serif;margin:1em;color:#222}
#state span{margin-right:1.5em}
#answer{margin-left:1em;font-weight:bold}
.refused{color:#b00}
#log{font:12px monospace;height:22em;overflow:auto;border:1px solid #ccc;padding:.3em;white-space:pre}
svg{border:1px solid #ccc;background:#fff;display:block;margin-bottom:.5em}
</style></head><body>
<h1>kiln dev</h1>
<div id="state"><span>serving: <b id="serving">-</b></span><span>build: <b id="build">none</b></span><span>last verdict: <b id="verdict">-</b></span><span id="conn">connecting</span></div>
<p><button id="replay">replay</button> <button id="undo">undo</button> <button id="bless">bless</button> <input id="backend" size="8" placeholder="backend" aria-label="backend"> <button id="switch">switch</button><span id="answer"></span></p>
<h2>roofline</h2><div id="roofline">no roofline yet</div>
<h2>per call across versions</h2><div id="ratios">no replay yet</div>
<h2>log</h2><div id="log"></div>
<script>
"use strict";
const token=new URLSearchParams(location.search).get("token")||"";
const el=id=>document.getElementById(id);
let serving=null;
function text(e){return (e.event?("["+e.event+"] "):"")+(e.message||"")}
function log(e){const d=el("log");const at=d.scrollTop+d.clientHeight>=d.scrollHeight-4;
 d.append((e.timestamp||"")+" "+text(e)+"\n");if(at)d.scrollTop=d.scrollHeight}
function onEvent(e){log(e);
 if(e.event==="swapped"||e.event==="rolled_back"||e.event==="undone"||e.event==="restarted"){serving=e.module+" v"+e.version;el("serving").textContent=serving}
 if(e.event==="replay"&&e.verdict)el("verdict").textContent="v"+e.version+" "+e.kernel+" call "+e.call+": "+e.verdict;
 if(e.event==="replay_failed")el("verdict").textContent=e.module+" v"+e.version+" FAILED its replay";
 if(e.event==="crashed"||e.event==="hung")el("verdict").textContent=(e.module||"")+" worker "+e.event;
 if(e.event==="build_started")el("build").textContent=e.module+" building";
 if(e.event==="build_finished")el("build").textContent="none";
 if(e.event==="build_failed")el("build").textContent=e.module+" build failed";
 if(e.event==="roofline"){
  if(serving===null){serving=e.module+" v"+e.version;el("serving").textContent=serving}
  soon("roofline")}
 if(e.event==="replay"||e.event==="replay_failed"||e.event==="crashed"||e.event==="hung")soon("ratios")}
// The roofline plots and the ratio charts, drawn by the server from the
// same events (kiln report's code); fetched once a burst of events is over.
const timers={};
function soon(name){clearTimeout(timers[name]);timers[name]=setTimeout(()=>fetchChart(name),300)}
async function fetchChart(name){try{const r=await fetch("/"+name,{headers:{"X-Kiln-Token":token}});
 if(r.ok)el(name).innerHTML=await r.text()}catch(_){}}
function connect(){const es=new EventSource("/events?token="+encodeURIComponent(token));
 es.onopen=()=>el("conn").textContent="live";
 es.onerror=()=>el("conn").textContent="reconnecting";
 es.onmessage=m=>{try{onEvent(JSON.parse(m.data))}catch(_){}}}
async function send(name,arg){const a=el("answer");a.className="";a.textContent=name+"...";
 const q=arg===undefined?"":"?arg="+encodeURIComponent(arg);
 try{const r=await fetch("/control/"+name+q,{method:"POST",headers:{"X-Kiln-Token":token}});const j=await r.json();
  if(j.answer==="refused"){a.className="refused";a.textContent="refused: "+j.reason}else a.textContent=j.message||"done"}
 catch(e){a.className="refused";a.textContent=String(e)}}
el("replay").onclick=()=>send("replay");el("undo").onclick=()=>send("undo");el("bless").onclick=()=>send("bless");
el("switch").onclick=()=>send("switch",el("backend").value.trim());
connect();
</script></body></html>
"##;
