"""Who a data subject is over time. Ledger entries name the profile id they
were recorded under; when profiles merge (Profile.merged_into, MergeEvent)
the survivor's consent state must consider the entries of every profile
merged into it, transitively. An undone merge clears merged_into, so the
entries go back with their profile."""
from __future__ import annotations

from typing import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from cdp.models import Profile

CHUNK = 500
MAX_DEPTH = 64  # merge chains are short; this only stops a corrupt cycle


def lineage(session: Session, profile_id: str) -> set[str]:
    """The profile id and every profile id merged into it, at any depth."""
    return lineage_many(session, [profile_id])[profile_id]


def lineage_many(session: Session, profile_ids: Iterable[str]) -> dict[str, set[str]]:
    """lineage() of many profiles with one query per merge level and chunk."""
    wanted = list(dict.fromkeys(profile_ids))
    children: dict[str, list[str]] = {}
    seen = set(wanted)
    frontier = list(wanted)
    for _ in range(MAX_DEPTH):
        if not frontier:
            break
        found: list[str] = []
        for start in range(0, len(frontier), CHUNK):
            part = frontier[start:start + CHUNK]
            for child, parent in session.execute(
                select(Profile.id, Profile.merged_into).where(Profile.merged_into.in_(part))
            ):
                children.setdefault(parent, []).append(child)
                if child not in seen:
                    seen.add(child)
                    found.append(child)
        frontier = found
    result: dict[str, set[str]] = {}
    for pid in wanted:
        members, stack = {pid}, [pid]
        while stack:
            for child in children.get(stack.pop(), ()):
                if child not in members:
                    members.add(child)
                    stack.append(child)
        result[pid] = members
    return result


def survivor(session: Session, profile_id: str) -> Profile | None:
    """The profile that now stands for `profile_id` (following merges)."""
    profile = session.get(Profile, profile_id)
    for _ in range(MAX_DEPTH):
        if profile is None or profile.merged_into is None:
            return profile
        profile = session.get(Profile, profile.merged_into)
    return None
