// chat.js - the room page of the cchannels example chat.
// Speaks the Django Channels tutorial protocol: sends {"message": "..."} to
// ws://HOST/ws/chat/ROOM/ and shows every {"message": "..."} it gets back. Beyond
// the tutorial: direct messages ({"message", "users": [...]}), join/leave notices
// with the member list, and a room close ({"command": "close"}, creator only).
'use strict';

const params = new URLSearchParams(window.location.search);
const room = params.get('room') || 'lobby';
const askedName = params.get('name') || '';

const log = document.getElementById('chat-log');
const input = document.getElementById('chat-message-input');
const submit = document.getElementById('chat-message-submit');
const closeButton = document.getElementById('close-room');
const memberList = document.getElementById('member-list');
const memberCount = document.getElementById('member-count');
const statusEl = document.getElementById('status');
const dmBar = document.getElementById('dm-bar');
const dmTargets = document.getElementById('dm-targets');

let me = askedName;          // the server confirms (or generates) it in "hello"
let owner = '';
const selected = new Set();  // direct-message recipients

document.title = '#' + room + ' - cchannels chat';
document.getElementById('room-title').textContent = '#' + room;

function setStatus(text, cls) {
  statusEl.textContent = text;
  statusEl.className = 'status ' + cls;
}

function time() {
  return new Date().toLocaleTimeString([], {hour: '2-digit', minute: '2-digit'});
}

// Appends one entry to the log; every text goes through textContent.
function addEntry(kind, parts) {
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  const div = document.createElement('div');
  div.className = 'entry ' + kind;
  const t = document.createElement('time');
  t.textContent = time();
  div.appendChild(t);
  for (const [cls, text] of parts) {
    const span = document.createElement('span');
    span.className = cls;
    span.textContent = text;
    div.appendChild(span);
  }
  log.appendChild(div);
  if (atBottom) log.scrollTop = log.scrollHeight;
  return div;
}

function notice(text, kind = 'notice') {
  return addEntry(kind, [['text', text]]);
}

function renderMembers(members, count) {
  memberList.replaceChildren();
  for (const name of members) {
    const li = document.createElement('li');
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'member' + (selected.has(name) ? ' selected' : '');
    button.dataset.name = name;
    button.textContent = name;
    if (name === me) {
      button.disabled = true;
      button.title = 'you';
      const you = document.createElement('small');
      you.textContent = ' (you)';
      button.appendChild(you);
    } else {
      button.title = 'Direct message to ' + name;
      button.addEventListener('click', () => toggleTarget(name));
    }
    if (name === owner) {
      const badge = document.createElement('span');
      badge.className = 'badge';
      badge.textContent = 'creator';
      button.appendChild(badge);
    }
    li.appendChild(button);
    memberList.appendChild(li);
  }
  memberCount.textContent = String(count);
  if (count > members.length) {
    const li = document.createElement('li');
    li.className = 'more';
    li.textContent = '… and more';
    memberList.appendChild(li);
  }
  // Forget recipients that left.
  for (const name of [...selected]) if (!members.includes(name)) selected.delete(name);
  renderTargets();
}

function toggleTarget(name) {
  if (selected.has(name)) selected.delete(name); else selected.add(name);
  for (const b of memberList.querySelectorAll('button.member'))
    b.classList.toggle('selected', selected.has(b.dataset.name));
  renderTargets();
  input.focus();
}

function renderTargets() {
  dmBar.hidden = selected.size === 0;
  dmTargets.textContent = [...selected].join(', ');
}

document.getElementById('dm-clear').addEventListener('click', () => {
  selected.clear();
  for (const b of memberList.querySelectorAll('button.member')) b.classList.remove('selected');
  renderTargets();
});

function enable(on) {
  input.disabled = !on;
  submit.disabled = !on;
  if (on) input.focus();
}

const scheme = window.location.protocol === 'https:' ? 'wss://' : 'ws://';
const url = scheme + window.location.host + '/ws/chat/' + encodeURIComponent(room) + '/' +
    (askedName ? '?name=' + encodeURIComponent(askedName) : '');
const socket = new WebSocket(url);

socket.onopen = () => {
  setStatus('connected', 'open');
  enable(true);
};

socket.onmessage = (e) => {
  let data;
  try {
    data = JSON.parse(e.data);
  } catch {
    notice('(unreadable message from the server)', 'error');
    return;
  }
  if (data.error) {
    notice(data.error, 'error');
    return;
  }
  switch (data.event) {
    case 'hello':
      me = data.user;
      document.getElementById('me').textContent = 'you are ' + me;
      notice(data.message);
      return;
    case 'join':
    case 'leave':
      owner = data.owner || '';
      closeButton.hidden = owner !== me;
      renderMembers(data.members || [], data.count || 0);
      notice(data.message, 'notice ' + data.event);
      return;
    case 'close':
      notice(data.message, 'notice');
      return;
  }
  // A chat message (from this server, or from any Channels tutorial consumer).
  const mine = data.user === me;
  if (Array.isArray(data.users)) {
    const to = data.users.join(', ');
    addEntry('dm' + (mine ? ' mine' : ''),
             [['user', (data.user || '?') + ' → ' + to], ['text', data.message]]);
  } else if (data.user) {
    addEntry('chat' + (mine ? ' mine' : ''), [['user', data.user], ['text', data.message]]);
  } else {
    addEntry('chat', [['text', String(data.message)]]);
  }
};

socket.onclose = (e) => {
  enable(false);
  closeButton.hidden = true;
  selected.clear();
  renderMembers([], 0);
  memberCount.textContent = '';
  if (e.code === 4000) {
    setStatus('room closed', 'closed');
    notice('This room was closed (' + e.code + ' ' + e.reason + ').', 'closed').id = 'room-closed';
  } else {
    const why = e.reason ? e.code + ' ' + e.reason : String(e.code);
    setStatus('disconnected', 'closed');
    notice('Disconnected (' + why + ').', 'closed');
  }
  const back = document.createElement('a');
  back.href = '/';
  back.textContent = 'Pick a room';
  addEntry('notice', []).appendChild(back);
};

document.getElementById('chat-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const message = input.value;
  if (!message.trim() || socket.readyState !== WebSocket.OPEN) return;
  const out = {message};
  if (selected.size) out.users = [...selected];
  socket.send(JSON.stringify(out));
  input.value = '';
  input.focus();
});

closeButton.addEventListener('click', () => {
  if (window.confirm('Close #' + room + ' for everyone?'))
    socket.send(JSON.stringify({command: 'close'}));
});
