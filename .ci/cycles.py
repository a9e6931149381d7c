#!/usr/bin/env python3
# Module import cycles of src/ (outside test modules): `files` = between sibling modules
# (files of one folder, or top-level modules), `top` = between top-level folders.
# usage: .ci/cycles.py files|top     (exit 1 when there is a cycle; .ci/run runs both)
import os,re,sys,itertools
import pathlib
root=str(pathlib.Path(__file__).resolve().parent.parent / 'src')
mods={}
for dp,dn,fn in os.walk(root):
    for f in fn:
        if not f.endswith('.rs'): continue
        p=os.path.join(dp,f); rel=os.path.relpath(p,root)[:-3].split(os.sep)
        if rel[-1]=='mod': rel=rel[:-1]
        if rel==['lib']: rel=[]
        mods[tuple(rel)]=p
def code(p):
    s=open(p).read()
    i=s.find('#[cfg(test)]\nmod tests')
    return s if i<0 else s[:i]
def resolve(parts):
    for n in range(len(parts),0,-1):
        if tuple(parts[:n]) in mods: return tuple(parts[:n])
    return None
edges={m:set() for m in mods}
for m,p in mods.items():
    s=code(p)
    s=re.sub(r'//[^\n]*','',s)
    for ref in re.findall(r'crate::([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)',s):
        t=resolve(ref.split('::'))
        if t and t!=m: edges[m].add(t)
    # super:: relative to parent module of a file module
    is_dir = p.endswith('mod.rs') or p.endswith('lib.rs')
    parent = m if is_dir else m[:-1]
    for ref in re.findall(r'super::([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)',s):
        base = list(parent if not is_dir else m[:-1])
        t=resolve(base+ref.split('::'))
        if t and t!=m: edges[m].add(t)
level=sys.argv[1] if len(sys.argv)>1 else 'files'
def scc(g):
    idx={};low={};st=[];on=set();out=[];c=[0]
    sys.setrecursionlimit(10000)
    def v(x):
        idx[x]=low[x]=c[0];c[0]+=1;st.append(x);on.add(x)
        for y in g.get(x,()):
            if y not in idx: v(y);low[x]=min(low[x],low[y])
            elif y in on: low[x]=min(low[x],idx[y])
        if low[x]==idx[x]:
            comp=[]
            while True:
                y=st.pop();on.discard(y);comp.append(y)
                if y==x:break
            if len(comp)>1: out.append(comp)
    for x in list(g):
        if x not in idx: v(x)
    return out
if level=='top':
    g={}
    for a,bs in edges.items():
        if not a: continue
        for b in bs:
            if b and a[0]!=b[0]: g.setdefault(a[0],set()).add(b[0])
    found=scc(g)
    print('top-level cycles:',found)
    sys.exit(1 if found else 0)
else:
    # within each folder: sibling files
    g={}
    for a,bs in edges.items():
        for b in bs:
            if len(a)>=1 and len(b)>=1 and a[:-1]==b[:-1]:
                g.setdefault(a,set()).add(b)
    found=scc(g)
    print('sibling cycles:',[sorted('::'.join(x) for x in c) for c in found])
    sys.exit(1 if found else 0)
