#!/usr/bin/env python3
# Import cycles among src/ modules (issue #25): prints each strongly connected component of the
# crate::/super:: module graph (comments and #[cfg(test)] parts ignored) and its internal edges.
import re,os,sys
from collections import defaultdict
root='src'
mods={}
for dp,dn,fn in os.walk(root):
    for f in fn:
        if not f.endswith('.rs'): continue
        p=os.path.join(dp,f)
        rel=os.path.relpath(p,root)[:-3]
        parts=rel.split('/')
        if parts[-1]=='mod': parts=parts[:-1]
        name='::'.join(parts)
        if name in ('main','lib'): continue
        mods[name]=open(p).read()
# top-level module granularity (figures as one unit and each figure separately)
def top(m): return m
edges=defaultdict(set)
names=set(mods)
for m,src in mods.items():
    # strip test modules
    src=src.split('#[cfg(test)]')[0]
    src='\n'.join(l for l in src.split('\n') if not l.strip().startswith('//'))
    for hit in re.findall(r'(?:crate|super)::([a-z_0-9]+(?:::[a-z_0-9]+)?)',src):
        parts=hit.split('::')
        cand=None
        if '::'.join(parts) in names: cand='::'.join(parts)
        elif parts[0] in names: cand=parts[0]
        # super:: inside figures
        if 'super::'+hit in src and m.startswith('figures::'):
            if 'figures::'+parts[0] in names: cand='figures::'+parts[0]
            elif parts[0] in ('FigureOptions','train_seeds','with_spinner'): cand='figures'
        if cand and cand!=m: edges[m].add(cand)
# tarjan
idx={};low={};st=[];on=set();res=[];i=[0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v]=low[v]=i[0];i[0]+=1;st.append(v);on.add(v)
    for w in edges[v]:
        if w not in idx: sc(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],idx[w])
    if low[v]==idx[v]:
        comp=[]
        while True:
            w=st.pop();on.discard(w);comp.append(w)
            if w==v:break
        res.append(comp)
for v in sorted(names):
    if v not in idx: sc(v)
big=[c for c in res if len(c)>1]
for c in big: print(len(c), sorted(c))
comp=set(big[0]) if big else set()
for m in sorted(comp):
    print(m,'->',sorted(e for e in edges[m] if e in comp))
