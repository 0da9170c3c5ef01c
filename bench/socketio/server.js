// The Socket.IO baseline: a room chat as Socket.IO's documentation writes it, on the
// websocket transport only. `node server.js PORT`; listens on 127.0.0.1.
"use strict";
const http = require("node:http");
const { Server } = require("socket.io");

const port = Number(process.argv[2]);
const httpServer = http.createServer();
const io = new Server(httpServer, { transports: ["websocket"], perMessageDeflate: false, serveClient: false });

io.on("connection", (socket) => {
  socket.on("join", (room) => {
    socket.join(room);
    socket.emit("joined", room);
  });
  socket.on("chat", (message) => {
    if (message && typeof message.room === "string") io.to(message.room).emit("chat", message);
  });
});

httpServer.listen(port, "127.0.0.1");
