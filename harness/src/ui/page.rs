//! The page: one HTML document with its script and style inline (no
//! external asset). It reads `/events` (the token from its own URL) and
//! draws from the events alone: the state (serving version, last
//! verdict, a build under way), the roofline of the last replayed version
//! (log-log, flop/byte across, GFLOP/s up, the roofs and one dot per call
//! from its `roofline` event: the f32 roof, the i8 one dashed where an i8
//! call is plotted; an arrow from the previous version's dot; a dot above
//! its roof hollow; a hover naming the call, its dims and figures), each
//! call's time over the previous version's with its interval (the chart of
//! `/ratios`, drawn by the server with `kiln report`'s code, fetched again
//! after each replay, failure, crash or hang), the log; its buttons POST
//! `/control/NAME` and show a refusal's reason.

pub const HTML: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>kiln dev</title>
<style>
body{font:14px system-ui,sans-serif;margin:1em;color:#222}
#state span{margin-right:1.5em}
#answer{margin-left:1em;font-weight:bold}
.refused{color:#b00}
#log{font:12px monospace;height:22em;overflow:auto;border:1px solid #ccc;padding:.3em;white-space:pre}
svg{border:1px solid #ccc;background:#fff}
.roof{stroke:#555;stroke-width:1.5;fill:none}
.axis text{font-size:11px}
circle.dot{fill:#c33}
circle.old{fill:#bbb}
circle.above{fill:#fff;stroke:#c33;stroke-width:2}
line.arrow{stroke:#888;stroke-width:1.2;marker-end:url(#head)}
</style></head><body>
<h1>kiln dev</h1>
<div id="state"><span>serving: <b id="serving">-</b></span><span>build: <b id="build">none</b></span><span>last verdict: <b id="verdict">-</b></span><span id="conn">connecting</span></div>
<p><button id="replay">replay</button> <button id="undo">undo</button><span id="answer"></span></p>
<svg id="roofline" width="640" height="400" role="img" aria-label="roofline"></svg>
<h2>per call across versions</h2><div id="ratios">no replay yet</div>
<h2>log</h2><div id="log"></div>
<script>
"use strict";
const token=new URLSearchParams(location.search).get("token")||"";
const NS=document.getElementById("roofline").namespaceURI;
const el=id=>document.getElementById(id);
// Per version: call -> its roofline point; the roofs last seen.
const versions=new Map();let serving=null,roof={gbs:null,gflops:null,i8:null};
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
  const calls=new Map();for(const c of e.calls)calls.set(c.call,Object.assign({version:e.version},c));
  versions.set(e.version,calls);
  if(e.roof_gbs)roof.gbs=e.roof_gbs;if(e.roof_gflops)roof.gflops=e.roof_gflops;if(e.roof_i8_gops)roof.i8=e.roof_i8_gops;
  if(serving===null){serving=e.module+" v"+e.version;el("serving").textContent=serving}
  draw()}
 if(e.event==="replay"||e.event==="replay_failed"||e.event==="crashed"||e.event==="hung")ratiosSoon()}
// The ratio charts, drawn by the server from the same events; fetched once
// a burst of events is over.
let ratiosTimer=null;
function ratiosSoon(){clearTimeout(ratiosTimer);ratiosTimer=setTimeout(ratios,300)}
async function ratios(){try{const r=await fetch("/ratios",{headers:{"X-Kiln-Token":token}});
 if(r.ok)el("ratios").innerHTML=await r.text()}catch(_){}}
function node(name,attrs,parent){const n=document.createElementNS(NS,name);
 for(const k in attrs)n.setAttribute(k,attrs[k]);parent.append(n);return n}
function ticks(lo,hi){const t=[];for(let p=Math.floor(Math.log10(lo));p<=Math.ceil(Math.log10(hi));p++)
 for(const m of [1,2,5]){const v=m*Math.pow(10,p);if(v>=lo&&v<=hi)t.push(v)}return t}
function fmt(v){return v>=1000||v<0.01?v.toExponential(0):String(+v.toPrecision(2))}
function draw(){
 const svg=el("roofline");svg.textContent="";
 const defs=node("defs",{},svg);const m=node("marker",{id:"head",markerWidth:8,markerHeight:8,refX:7,refY:4,orient:"auto"},defs);
 node("path",{d:"M0,0 L8,4 L0,8 z",fill:"#888"},m);
 const vs=[...versions.keys()].sort((a,b)=>a-b);if(!vs.length)return;
 const cur=versions.get(vs[vs.length-1]),prev=vs.length>1?versions.get(vs[vs.length-2]):null;
 const pts=[...cur.values(),...(prev?prev.values():[])].filter(p=>p.intensity>0&&p.gflops>0);
 let xs=pts.map(p=>p.intensity),ys=pts.map(p=>p.gflops);
 if(roof.gflops)ys.push(roof.gflops);if(roof.i8&&[...cur.values()].some(p=>p.compute==="i8"))ys.push(roof.i8);if(roof.gbs&&roof.gflops)xs.push(roof.gflops/roof.gbs);
 if(!xs.length){node("text",{x:20,y:30},svg).textContent="no call with declared flops and bytes timed yet";return}
 const x0=Math.min(...xs)/4,x1=Math.max(...xs)*4,y0=Math.min(...ys)/4,y1=Math.max(...ys)*2;
 const L=60,R=620,T=20,B=360;
 const X=v=>L+(Math.log(v)-Math.log(x0))/(Math.log(x1)-Math.log(x0))*(R-L);
 const Y=v=>B-(Math.log(v)-Math.log(y0))/(Math.log(y1)-Math.log(y0))*(B-T);
 const ax=node("g",{class:"axis"},svg);
 node("line",{x1:L,y1:B,x2:R,y2:B,stroke:"#000"},ax);node("line",{x1:L,y1:T,x2:L,y2:B,stroke:"#000"},ax);
 for(const t of ticks(x0,x1)){node("line",{x1:X(t),y1:B,x2:X(t),y2:B+4,stroke:"#000"},ax);node("text",{x:X(t),y:B+16,"text-anchor":"middle"},ax).textContent=fmt(t)}
 for(const t of ticks(y0,y1)){node("line",{x1:L-4,y1:Y(t),x2:L,y2:Y(t),stroke:"#000"},ax);node("text",{x:L-6,y:Y(t)+4,"text-anchor":"end"},ax).textContent=fmt(t)}
 node("text",{x:(L+R)/2,y:B+34,"text-anchor":"middle"},ax).textContent="arithmetic intensity (flop/byte)";
 node("text",{x:14,y:(T+B)/2,transform:"rotate(-90 14 "+(T+B)/2+")","text-anchor":"middle"},ax).textContent="GFLOP/s";
 // A roof: min(peak, bandwidth x intensity), from x0 to x1.
 const drawRoof=(peak,label,extra)=>{const knee=peak/roof.gbs;const pts=[];
  const a=Math.max(x0,y0/roof.gbs);pts.push([a,roof.gbs*a]);
  if(knee<x1)pts.push([Math.max(knee,x0),Math.min(peak,roof.gbs*Math.max(knee,x0))]);pts.push([x1,Math.min(peak,roof.gbs*x1)]);
  node("polyline",Object.assign({class:"roof","data-gbs":roof.gbs,"data-peak":peak,points:pts.map(p=>X(p[0])+","+Y(p[1])).join(" ")},extra),svg);
  node("text",{x:R-4,y:Y(peak)-4,"text-anchor":"end","font-size":11},svg).textContent=label};
 if(roof.gbs&&roof.gflops)drawRoof(roof.gflops,fmt(roof.gflops)+" GFLOP/s f32, "+fmt(roof.gbs)+" GB/s",{});
 if(roof.gbs&&roof.i8&&[...cur.values()].some(p=>p.compute==="i8"))drawRoof(roof.i8,fmt(roof.i8)+" GOP/s i8",{"stroke-dasharray":"4 3"});
 for(const [call,p] of cur){if(!(p.intensity>0&&p.gflops>0))continue;
  const q=prev&&prev.get(call);
  if(q&&q.intensity>0&&q.gflops>0){node("circle",{class:"old",cx:X(q.intensity),cy:Y(q.gflops),r:3},svg);
   node("line",{class:"arrow",x1:X(q.intensity),y1:Y(q.gflops),x2:X(p.intensity),y2:Y(p.gflops)},svg)}
  // Above its roof (as the replay table marks it): above the memory roof,
  // the data stayed in a cache.
  const above=p.percent!=null&&p.percent>100;
  const c=node("circle",{class:above?"dot above":"dot",cx:X(p.intensity),cy:Y(p.gflops),r:5,"data-call":call},svg);
  node("title",{},c).textContent="v"+p.version+" call "+call+" "+p.kernel+(p.dims?" "+p.dims:"")+"\n"+
   fmt(p.gflops)+" GFLOP/s, "+(p.gbs?fmt(p.gbs)+" GB/s, ":"")+fmt(p.intensity)+" flop/byte"+
   (p.percent!=null?", "+p.percent.toFixed(0)+"% of roofline ("+p.compute+" compute)":"")+(p.ms!=null?", "+p.ms.toPrecision(3)+" ms":"")+
   (above?(p.bound==="memory"?"\nabove the memory roof: cache-resident":"\nabove the measured compute peak"):"")}
}
function connect(){const es=new EventSource("/events?token="+encodeURIComponent(token));
 es.onopen=()=>el("conn").textContent="live";
 es.onerror=()=>el("conn").textContent="reconnecting";
 es.onmessage=m=>{try{onEvent(JSON.parse(m.data))}catch(_){}}}
async function send(name){const a=el("answer");a.className="";a.textContent=name+"...";
 try{const r=await fetch("/control/"+name,{method:"POST",headers:{"X-Kiln-Token":token}});const j=await r.json();
  if(j.answer==="refused"){a.className="refused";a.textContent="refused: "+j.reason}else a.textContent=j.message||"done"}
 catch(e){a.className="refused";a.textContent=String(e)}}
el("replay").onclick=()=>send("replay");el("undo").onclick=()=>send("undo");
connect();
</script></body></html>
"##;
