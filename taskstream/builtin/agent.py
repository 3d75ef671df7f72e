"""``agent``: a multi-step run — plan, act with a small set of tools, answer — each model call
and each tool call a durable step, within a step budget and a token budget.

* ``plan``: the model writes a short plan (streamed as ``plan``).
* ``decide-i``: given the question, the plan and what the tools returned so far, the model
  replies with one line: ``SEARCH: <query>`` (the user's documents), ``CALC: <expression>``
  (arithmetic) or ``ANSWER: <answer>`` once it can answer. A reply in no such form is taken
  as the answer (small models often just answer).
* ``tool-i``: the tool runs; what it returns is the next observation.
* ``answer``: the model writes the final answer from the observations (streamed as
  ``answer``).

Budgets: at most ``max_steps`` tool calls — a run that would need another fails; and
``max_tokens`` tokens (prompt + completion of every model call of the run, as recorded in its
steps) — a run past it fails at the step that crossed it, and no call is given more
completion tokens than the budget has left. Both failures are permanent (no retry: it would
spend the same again) and say which budget and how much was used.

It needs a model: with the extractive summarizer (no model configured) it fails at once.
"""

from __future__ import annotations

import ast
import operator
import re
from typing import Any, Literal, cast

from pydantic import Field

from taskstream.builtin.llm.base import Message
from taskstream.context import TaskContext
from taskstream.declaration import Params, PermanentError, task

Tool = Literal["search", "calculator"]
TOOLS: tuple[Tool, ...] = ("search", "calculator")
#: Completion tokens one model call may use at most (less when the budget has less left).
CALL_TOKENS = 512
_ACTION = re.compile(r"^\s*(SEARCH|CALC|ANSWER)\s*:\s*(.*)$", re.IGNORECASE | re.MULTILINE)


class AgentParams(Params):
    """Answer ``question`` with the tools, in at most ``max_steps`` tool calls and
    ``max_tokens`` tokens."""

    question: str = Field(min_length=1, max_length=4000)
    tools: list[Tool] = Field(default_factory=lambda: list(TOOLS), max_length=2)
    max_steps: int = Field(5, ge=1, le=20, description="Tool calls allowed.")
    max_tokens: int = Field(8000, ge=100, le=500_000,
                            description="Token budget of the run: prompt + completion, "
                                        "every model call.")


class BudgetExceeded(PermanentError):
    """The run used up its step or token budget."""


# --- tools -----------------------------------------------------------------------------------

_OPS: dict[type, Any] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow, ast.USub: operator.neg, ast.UAdd: operator.pos,
}


def calculate(expression: str) -> str:
    """Arithmetic on numbers only (no names, no calls): + - * / // % ** and parentheses."""
    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return cast(float, node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and (abs(right) > 100 or abs(left) > 1e6):
                raise ValueError("exponent too large")
            return cast(float, _OPS[type(node.op)](left, right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return cast(float, _OPS[type(node.op)](ev(node.operand)))
        raise ValueError(f"not arithmetic: {ast.dump(node)[:60]}")

    if len(expression) > 200:
        return "error: expression too long"
    try:
        value = ev(ast.parse(expression.strip(), mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError) as exc:
        return f"error: {exc}"
    return str(int(value)) if float(value).is_integer() else f"{value:.10g}"


async def search(ctx: TaskContext, query: str) -> str:
    """The caller's documents that best match ``query`` (issue 12's search)."""
    try:
        from taskstream.builtin.search import search_documents  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return "error: document search is not available on this server"
    hits = await search_documents(cast(Any, ctx).pool, ctx.owner, query, k=3)
    if not hits:
        return "no matching documents"
    return "\n".join(f"[{h.filename} p.{h.page or 1}] {h.text[:400]}" for h in hits)


async def run_tool(ctx: TaskContext, tool: str, arg: str) -> str:
    if tool == "calculator":
        return calculate(arg)
    return await search(ctx, arg)


# --- the run ---------------------------------------------------------------------------------

def parse_action(text: str) -> tuple[str, str]:
    """(kind, argument): kind is search, calc or answer."""
    m = _ACTION.search(text)
    if m is None:
        return "answer", text.strip()
    return m.group(1).lower(), m.group(2).strip()


def _tool_help(tools: list[Tool]) -> str:
    lines = []
    if "search" in tools:
        lines.append("SEARCH: <query> searches the user's documents")
    if "calculator" in tools:
        lines.append("CALC: <expression> evaluates arithmetic")
    return "; ".join(lines) or "(no tools)"


class Run:
    def __init__(self, ctx: TaskContext, params: AgentParams) -> None:
        self.ctx, self.params = ctx, params
        self.used = 0

    async def model(self, name: str, messages: list[Message]) -> str:
        from taskstream.builtin.llm.steps import model_step, tokens_of

        left = self.params.max_tokens - self.used
        if left <= 0:
            raise BudgetExceeded(f"token budget exhausted: {self.used} of "
                                 f"{self.params.max_tokens} used before step {name!r}")
        done = await model_step(self.ctx, name, messages, max_tokens=min(CALL_TOKENS, left))
        self.used += tokens_of(done)
        if self.used > self.params.max_tokens:
            raise BudgetExceeded(f"token budget exceeded at step {name!r}: {self.used} of "
                                 f"{self.params.max_tokens} tokens used")
        text: str = done["text"]
        return text


@task(max_attempts=3, timeout=1800, description="Answer a question in steps: plan, act with "
      "tools (search the user's documents, arithmetic), answer; within step and token budgets.")
async def agent(ctx: TaskContext, params: AgentParams) -> dict[str, Any]:
    from taskstream.builtin.llm.steps import llm_for

    if llm_for(ctx).provider == "extractive":
        raise PermanentError("the agent needs a language model, and none is configured "
                             "(TASKSTREAM_LLM_PROVIDER resolves to the extractive summarizer)")
    run = Run(ctx, params)
    tools = _tool_help(params.tools)
    plan = await run.model("plan", [
        {"role": "system", "content": "Write a short numbered plan (at most 4 lines) for "
                                      f"answering the question. Tools you will have: {tools}."},
        {"role": "user", "content": params.question}])
    await ctx.progress(10, "planned")
    system = (f"You answer the user's question step by step. Tools: {tools}. Reply with exactly "
              "one line: a tool call, or ANSWER: <answer> once you can answer. "
              f"Your plan:\n{plan}")
    transcript = f"QUESTION: {params.question}\n"
    steps: list[dict[str, str]] = []
    for i in range(params.max_steps + 1):
        decision = await run.model(f"decide-{i}", [
            {"role": "system", "content": system}, {"role": "user", "content": transcript}])
        kind, arg = parse_action(decision)
        if kind == "answer":
            break
        if i == params.max_steps:
            raise BudgetExceeded(f"step budget exhausted: {params.max_steps} tool calls and "
                                 "no answer yet")
        tool = "calculator" if kind == "calc" else "search"
        if tool not in params.tools:
            observation = f"error: the tool {tool} is not available"
        else:
            observation = await ctx.step(f"tool-{i}", run_tool, ctx, tool, arg)
        steps.append({"tool": tool, "input": arg, "observation": observation})
        transcript += f"ACTION: {kind.upper()}: {arg}\nOBSERVATION: {observation}\n"
        await ctx.progress(min(90, 10 + 80 * (i + 1) / params.max_steps), f"{tool}: {arg[:60]}")
    answer = await run.model("answer", [
        {"role": "system", "content": "Write the final answer to the question from the "
                                      "observations; be brief and say what it rests on."},
        {"role": "user", "content": transcript + f"DRAFT: {arg}\n"}])
    return {"answer": answer, "plan": plan, "steps": steps, "tokens_used": run.used}
